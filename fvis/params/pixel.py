"""Free pixels squashed to [0, 1] by a sigmoid."""
from __future__ import annotations

import torch
from torch import nn

from .base import Parameterization, _as_batch, _generator, _size


class PixelImage(Parameterization):
    """Free pixels squashed to [0, 1] by a sigmoid: ``() -> (B, C, H, W)``.

    Args:
        size: ``H`` or ``(H, W)``. batch: B. channels: C (any count).
        init: optional image ``(C, H, W)`` / ``(B, C, H, W)`` in [0, 1] to start from.
        sd: std of the random init (in logit space) when ``init`` is None.
        seed: seeds the random init.
    """

    def __init__(self, size=224, batch: int = 1, channels: int = 3, init: torch.Tensor | None = None,
                 sd: float = 0.01, seed: int | None = 0):
        super().__init__()
        h, w = _size(size) if init is None else init.shape[-2:]
        self.shape = (batch, channels if init is None else init.shape[-3], h, w)
        if init is None:
            raw = torch.randn(self.shape, generator=_generator(seed)) * sd
        else:
            raw = torch.logit(_as_batch(init, batch).clamp(1e-4, 1 - 1e-4))
        self.raw = nn.Parameter(raw.contiguous())

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.raw)
