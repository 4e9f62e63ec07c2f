"""Quality measurements fvis computes itself (definitions: shared GUIDE §4)."""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from regularizers import gaussian_blur

HELDOUT = {"jitter": 16, "scale": (0.8, 1.2), "degrees": 15.0, "flip": 0.5, "blur_sigma": (0.1, 1.0)}
# a family apart from the transforms the recipes train on (geometric, blur): colour, resolution, compression and
# sensor noise (the `colour-shift` recipe, the default, trains on per-channel colour shifts: its colour part overlaps)
UNSEEN = {"brightness": 0.15, "contrast": (0.7, 1.3), "saturation": (0.6, 1.4), "resolution": (0.4, 0.7),
          "jpeg": (30.0, 70.0), "noise": 0.03}


def heldout_transforms(images: torch.Tensor, n: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random transforms per image: shift ±16 px, scale 0.8–1.2, rotate
    ±15°, horizontal flip (p = 0.5), mild Gaussian blur (sigma 0.1–1.0); reflection padding.
    Independent draws of the family the ``robust`` recipe trains with (held-out draws, not a
    held-out family: that is :func:`unseen_transforms`). ``(B, C, H, W) -> (B * n, C, H, W)``,
    item-major."""
    g = torch.Generator().manual_seed(seed)
    x = images.repeat_interleave(n, 0)
    m, (_, _, h, w) = x.shape[0], x.shape
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    shift = (u(m, 2) * 2 - 1) * HELDOUT["jitter"]
    lo, hi = HELDOUT["scale"]
    scale = (lo + (hi - lo) * u(m)).unsqueeze(1).expand(m, 2)
    angle = (u(m) * 2 - 1) * HELDOUT["degrees"]
    flip = u(m) < HELDOUT["flip"]
    s_lo, s_hi = HELDOUT["blur_sigma"]
    sigma = s_lo + (s_hi - s_lo) * u(m)
    center = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(m, 2)
    matrix = kornia.geometry.transform.get_affine_matrix2d(shift, center, scale, angle)[:, :2]
    dev = images.device
    x = kornia.geometry.transform.warp_affine(x, matrix.to(dev, x.dtype), (h, w), padding_mode="reflection",
                                              align_corners=True)
    x = torch.where(flip.to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
    return gaussian_blur(x, sigma, 5).clamp(0, 1)


def unseen_transforms(images: torch.Tensor, n: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random transforms per image from a family apart from the recipes' training transforms (kornia;
    the ``colour-shift`` recipe trains on per-channel colour shifts, which overlap the colour part):
    brightness ±0.15, contrast x0.7–1.3, saturation x0.6–1.4, the side shrunk to 40–70 % and
    enlarged back (antialiased), JPEG quality 30–70, Gaussian noise of sigma up to 0.03.
    ``(B, 3, H, W) -> (B * n, 3, H, W)``, item-major."""
    g = torch.Generator().manual_seed(seed)
    x = images.repeat_interleave(n, 0)
    m, (_, _, h, w), dev = x.shape[0], x.shape, images.device
    u = lambda lo, hi: (lo + (hi - lo) * torch.rand(m, generator=g)).to(dev, x.dtype)  # noqa: E731
    b, (c_lo, c_hi), (s_lo, s_hi) = UNSEEN["brightness"], UNSEEN["contrast"], UNSEEN["saturation"]
    x = kornia.enhance.adjust_brightness(x, u(-b, b))
    x = kornia.enhance.adjust_contrast(x, u(c_lo, c_hi), clip_output=True)
    if x.shape[1] == 3:
        x = kornia.enhance.adjust_saturation(x, u(s_lo, s_hi))
    def shrunk(item, r):  # down to r of the side (antialiased), then back up
        small = F.interpolate(item, size=(max(1, round(h * r)), max(1, round(w * r))), mode="bilinear",
                              antialias=True, align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    r = u(*UNSEEN["resolution"]).cpu()
    x = torch.cat([shrunk(x[i:i + 1], float(r[i])) for i in range(m)])
    x = x.clamp(0, 1)
    if x.shape[1] == 3:
        x = kornia.enhance.jpeg_codec_differentiable(x, u(*UNSEEN["jpeg"]))
    noise = torch.randn(x.shape, generator=g).to(dev, x.dtype) * u(0.0, UNSEEN["noise"]).view(-1, 1, 1, 1)
    return (x + noise).clamp(0, 1)


FAMILIES = {"heldout": heldout_transforms, "unseen": unseen_transforms}


@torch.no_grad()
def heldout_predictions(model: torch.nn.Module, images: torch.Tensor, n: int = 32, seed: int = 0,
                        chunk: int = 64, family: str = "heldout") -> torch.Tensor:
    """Top-1 class of ``model`` on ``n`` transforms of each image: ``(B, n)``. ``family``:
    ``heldout`` (:func:`heldout_transforms`) or ``unseen`` (:func:`unseen_transforms`)."""
    preds = []
    for i in range(images.shape[0]):
        x = FAMILIES[family](images[i:i + 1], n, seed)
        preds.append(torch.cat([model(x[j:j + chunk]).argmax(1) for j in range(0, n, chunk)]).cpu())
    return torch.stack(preds)
