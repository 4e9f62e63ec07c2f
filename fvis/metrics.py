"""Quality measurements fvis computes itself (definitions: shared GUIDE §4)."""
from __future__ import annotations

import kornia
import torch

HELDOUT = {"jitter": 16, "scale": (0.8, 1.2), "degrees": 15.0, "flip": 0.5, "blur_sigma": (0.1, 1.0)}


def heldout_transforms(images: torch.Tensor, n: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random transforms per image, unlike the training ones: shift ±16 px,
    scale 0.8–1.2, rotate ±15°, horizontal flip (p = 0.5), mild Gaussian blur (sigma 0.1–1.0);
    reflection padding. ``(B, C, H, W) -> (B * n, C, H, W)``, item-major."""
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
    sigma = (s_lo + (s_hi - s_lo) * u(m)).unsqueeze(1).expand(m, 2)
    center = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(m, 2)
    matrix = kornia.geometry.transform.get_affine_matrix2d(shift, center, scale, angle)[:, :2]
    dev = images.device
    x = kornia.geometry.transform.warp_affine(x, matrix.to(dev, x.dtype), (h, w), padding_mode="reflection",
                                              align_corners=True)
    x = torch.where(flip.to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
    return kornia.filters.gaussian_blur2d(x, 5, sigma.to(dev, x.dtype)).clamp(0, 1)


@torch.no_grad()
def heldout_predictions(model: torch.nn.Module, images: torch.Tensor, n: int = 32, seed: int = 0,
                        chunk: int = 64) -> torch.Tensor:
    """Top-1 class of ``model`` on :func:`heldout_transforms` of each image: ``(B, n)``."""
    preds = []
    for i in range(images.shape[0]):
        x = heldout_transforms(images[i:i + 1], n, seed)
        preds.append(torch.cat([model(x[j:j + chunk]).argmax(1) for j in range(0, n, chunk)]).cpu())
    return torch.stack(preds)
