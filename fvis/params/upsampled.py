"""Coarse-to-fine: another parameterization's output resized to the model's input size."""
from __future__ import annotations

import torch

from .base import Parameterization, _size


class Upsampled(Parameterization):
    """Another parameterization's output resized (bilinear, antialiased when shrinking) to
    ``size``: optimize a coarse image while the model sees its input size (coarse-to-fine).
    ``() -> (B, C, H, W)``."""

    def __init__(self, inner: Parameterization, size):
        super().__init__()
        self.inner, self.size = inner, _size(size)
        self.shape = (*inner.shape[:2], *self.size)

    def forward(self) -> torch.Tensor:
        return torch.nn.functional.interpolate(self.inner(), size=self.size, mode="bilinear", align_corners=False)

    def after_step(self) -> None:
        self.inner.after_step()
