"""Make fvis/data/natural_magnitude.safetensors: the mean amplitude spectrum of the offline
sample photos (scikit-image, matplotlib) at 224x224, used by MacoImage when no reference
images are given. Usage: python scripts/make_maco_spectrum.py"""
from pathlib import Path

import matplotlib
import skimage.data
import torch
from safetensors.torch import save_file

from fvis.files import load_image
from fvis.param import natural_magnitude

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]


def main():
    images = [torch.from_numpy(getattr(skimage.data, n)().copy())[..., :3].permute(2, 0, 1).float() / 255 for n in PHOTOS]
    images.append(load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    crops = []  # several crops and flips of each photo at 224
    from torchvision.transforms.v2 import functional as F
    for im in images:
        for side in (224, 320, 448):
            r = F.resize(im, [side], antialias=True)
            h, w = r.shape[-2:]
            for top, left in ((0, 0), (h - 224, w - 224), ((h - 224) // 2, (w - 224) // 2)):
                crop = r[:, top:top + 224, left:left + 224]
                crops += [crop, crop.flip(-1)]
    mag = natural_magnitude(torch.stack(crops))
    out = Path(__file__).resolve().parents[1] / "fvis" / "data" / "natural_magnitude.safetensors"
    save_file({"magnitude": mag.half().contiguous()}, str(out), metadata={"images": str(len(crops)), "size": "224x224"})
    print(f"{len(crops)} crops of {len(images)} photos -> {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
