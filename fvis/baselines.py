"""Reference inputs ("baselines") for integrated gradients, occlusion and feature isolation.

A baseline is an input of the same shape as ``x`` that carries (ideally) no evidence:
black, a heavily blurred copy, uniform noise, or the mean image of a folder.
"""
from __future__ import annotations

from pathlib import Path

import kornia
import torch

from .datasets import ImageFolder
from .errors import FvisError
from .progress import progress_bar

KINDS = ("black", "blur", "noise", "mean", "gray")


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian blur of ``(B, C, H, W)`` (reflect border); ``sigma`` defaults to 5% of the longer side."""
    sigma = float(sigma if sigma is not None else 0.05 * max(x.shape[-2:]))
    k = min(2 * int(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd, no larger than the image
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def dataset_mean(folder: str | Path, size: int | tuple[int, int], channels: int = 3,
                 progress: bool = False) -> torch.Tensor:
    """Per-pixel mean ``(C, H, W)`` of the images in ``folder`` (resized and centre-cropped to
    ``size``); unreadable files are skipped with a warning."""
    images = ImageFolder(folder, size, batch_size=32, channels=channels)
    total, n = None, 0
    for _, batch in progress_bar(images, show=progress, desc="mean image", unit="batch"):
        total = batch.sum(0) if total is None else total + batch.sum(0)
        n += batch.shape[0]
    if n == 0:
        raise FvisError(f"no readable images in {folder} ({images.summary()})")
    return total / n


def make_baseline(x: torch.Tensor, kind: str | float | torch.Tensor = "black", *, seed: int = 0,
                  folder: str | Path | None = None, sigma: float | None = None) -> torch.Tensor:
    """A baseline shaped like ``x`` ``(B, C, H, W)``.

    ``kind``: ``"black"`` (zeros), ``"gray"`` (0.5), ``"blur"`` (Gaussian blur of ``x``,
    ``sigma``), ``"noise"`` (uniform [0, 1], seeded), ``"mean"`` (mean image of ``folder``),
    a number (constant), or a tensor broadcastable to ``x``.
    """
    if isinstance(kind, torch.Tensor):
        try:
            return kind.to(x.device, x.dtype).expand_as(x).clone()
        except RuntimeError:
            raise FvisError(f"baseline of shape {tuple(kind.shape)} does not fit input {tuple(x.shape)}") from None
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "gray":
        return torch.full_like(x, 0.5)
    if kind == "blur":
        return blur(x, sigma)
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(x.shape, generator=g).to(x.device, x.dtype)
    if kind == "mean":
        if folder is None:
            raise FvisError("the 'mean' baseline needs a folder of images (--baseline-images DIR)")
        return dataset_mean(folder, tuple(x.shape[-2:]), x.shape[1]).to(x.device, x.dtype).expand_as(x).clone()
    raise FvisError(f"unknown baseline {kind!r}: choose from {', '.join(KINDS)}, a number, or a tensor")
