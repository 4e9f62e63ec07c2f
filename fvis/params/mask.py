"""A smooth mask between an image and a baseline, optimized by feature isolation
(:func:`fvis.attribution.isolate`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Parameterization


class MaskedInput(Parameterization):
    """``() -> mask * image + (1 - mask) * baseline``, ``(B, C, H, W)``.

    The mask is ``sigmoid(logits)`` on a grid of ``ceil(H / cell) x ceil(W / cell)`` cells,
    upsampled bilinearly to ``(H, W)`` (smooth by construction). ``init``: starting mask value.
    """

    def __init__(self, image: torch.Tensor, baseline: torch.Tensor, cell: int = 8, init: float = 0.9):
        super().__init__()
        if image.shape != baseline.shape:
            raise ValueError(f"image {tuple(image.shape)} and baseline {tuple(baseline.shape)} differ in shape")
        b, _, h, w = image.shape
        self.shape = tuple(image.shape)
        self.register_buffer("image", image.detach().clone())
        self.register_buffer("baseline", baseline.detach().clone())
        grid = (math.ceil(h / cell), math.ceil(w / cell))
        self.mask_logits = nn.Parameter(torch.full((b, 1, *grid), math.log(init / (1 - init)), device=image.device))

    def mask_lowres(self) -> torch.Tensor:
        """``(B, 1, h, w)`` in [0, 1]."""
        return torch.sigmoid(self.mask_logits)

    def mask(self) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1]."""
        return F.interpolate(self.mask_lowres(), self.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self) -> torch.Tensor:
        m = self.mask()
        return self.baseline + m * (self.image - self.baseline)
