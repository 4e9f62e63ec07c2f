"""The offline sample photos (scikit-image, scikit-learn, matplotlib) as tensors, and crops of
them, shared by the prototype benchmark and the naturalness ranges (scripts/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from fvis.io import load_image

# Lite0's reading of the photos that show an ImageNet class (coffee -> espresso, ...)
LABELS = {"chelsea": 285, "coffee": 967, "rocket": 657, "flower": 985, "china": 698}


def offline_photos() -> dict[str, torch.Tensor]:
    """``{name: (3, H, W)}`` in [0, 1]: the seven colour photographs that ship with the dev
    dependencies (astronaut, chelsea, coffee, rocket, china, flower, grace_hopper)."""
    import matplotlib
    import sklearn.datasets
    import skimage.data

    photos = {n: torch.from_numpy(getattr(skimage.data, n)().copy())[..., :3].permute(2, 0, 1).float() / 255
              for n in ("astronaut", "chelsea", "coffee", "rocket")}
    sk = Path(sklearn.datasets.__file__).parent / "images"
    photos["china"] = load_image(sk / "china.jpg")
    photos["flower"] = load_image(sk / "flower.jpg")
    photos["grace_hopper"] = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    return photos


def photo_crops(size: int = 224, sides=(224, 288, 352), flips=(0, 1)) -> dict[str, torch.Tensor]:
    """``{"<name>_<i><flip>": (3, size, size)}``: each photo resized to each short side in
    ``sides``, centre-cropped to ``size`` and optionally mirrored."""
    out = {}
    for name, im in offline_photos().items():
        for i, side in enumerate(sides):
            crop = F.center_crop(F.resize(im, [side], antialias=True), [size, size]).clamp(0, 1)
            for flip in flips:
                out[f"{name}_{i}{flip}"] = crop.flip(-1) if flip else crop
    return out
