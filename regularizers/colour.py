"""Random colour shift of the transformed input: class evidence that survives a change of colour balance.

Plug-In Inversion (Ghiasi et al., CVPR 2022) found this augmentation the one that most made
inverted images recognizable: each step shows the model every item with its channels scaled and
shifted at random, so the optimizer cannot rest the class on one exact hue or level and puts it
into shapes and relative colours instead. Per item and channel ``c``:
``x_c <- (x_c - 0.5) * exp(u) + 0.5 + v`` with ``u, v`` uniform in ``[-shift, shift]``
(PII's ``sigma * x + mu`` about mid-grey, in the image's [0, 1] space, before normalization).
"""
from __future__ import annotations

import torch

from .base import Regularizer


class ColourShift(Regularizer):
    """Scale each item's channels by ``exp(U(-shift, shift))`` about 0.5 and add ``U(-shift, shift)``,
    independently per item and channel. ``(B, C, H, W) -> (B, C, H, W)``; not clamped (the model
    sees the shifted values as they are)."""

    def __init__(self, shift: float = 0.1):
        super().__init__(name="colour_shift")
        if not 0 < shift < float("inf"):
            raise ValueError(f"shift must be a finite number > 0, got {shift}")
        self.shift = float(shift)

    def transform(self, x, generator):
        b, c = x.shape[:2]
        u = (2 * torch.rand(b, c, 1, 1, generator=generator) - 1) * self.shift
        v = (2 * torch.rand(b, c, 1, 1, generator=generator) - 1) * self.shift
        return (x - 0.5) * u.exp().to(x.device, x.dtype) + 0.5 + v.to(x.device, x.dtype)
