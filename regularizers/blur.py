"""Random Gaussian blur of the transformed input: features that survive a little defocus.

A class evidence made of pixel-scale patterns is erased by a blur of one pixel; an optimizer that
sees blurred copies puts its evidence into larger structures (and the other networks, photos and
people read those). Blurring is kornia's ``gaussian_blur2d`` with one sigma per item.
"""
from __future__ import annotations

import math

import kornia
import torch

from .base import Regularizer


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Blur item ``i`` of ``(B, C, H, W)`` with a Gaussian of ``sigma[i]`` px (``(B,)``), reflected borders,
    kernel ``size`` (default: two of the largest sigmas either side). kornia's per-item-sigma path: on the
    CPU about 10x faster than its shared-kernel path (one sigma as a tuple), with the same values."""
    size = size or 2 * math.ceil(2 * float(sigma.max())) + 1
    return kornia.filters.gaussian_blur2d(x, size, sigma.to(x.device, x.dtype)[:, None].expand(-1, 2),
                                          border_type="reflect")


class RandomBlur(Regularizer):
    """Blur each item with a Gaussian of sigma drawn uniformly in ``sigma`` (px), with probability
    ``p`` (else unchanged). Reflection at the borders. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 1.0), p: float = 1.0):
        super().__init__(name="blur")
        lo, hi = sigma
        if not 0 < lo <= hi or not 0 <= p <= 1:
            raise ValueError(f"sigma must be 0 < lo <= hi and p in [0, 1], got sigma={sigma}, p={p}")
        self.sigma, self.p = (float(lo), float(hi)), float(p)
        self.size = 2 * math.ceil(2 * hi) + 1  # the kernel reaches two sigmas either side

    def transform(self, x, generator):
        b = x.shape[0]
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(b, generator=generator)
        keep = torch.rand(b, generator=generator) >= self.p
        blurred = gaussian_blur(x, sigma, self.size)
        return torch.where(keep.to(x.device)[:, None, None, None], x, blurred) if self.p < 1 else blurred
