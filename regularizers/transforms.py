"""Transformation robustness: random pad / jitter / scale / rotate, one affine warp per item
(kornia's ``warp_affine`` semantics, through :func:`regularizers.warp.warp_affine`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .base import Regularizer
from .warp import warp_affine

DEFAULT_SCALES = tuple(round(0.90 + 0.02 * i, 2) for i in range(11))  # 0.90, 0.92, ..., 1.10


class TransformRobustness(Regularizer):
    """Lucid's standard transforms: pad ``pad`` px of ``fill`` -> jitter ``jitter`` px -> scale
    from ``scales`` -> rotate within ``±degrees`` -> jitter ``jitter_after`` px.

    All steps are composed into one affine matrix per batch item and applied with a single
    bilinear warp (one resampling, not four): kornia's ``warp_affine`` semantics, with a backward
    that computes the input gradient only (:func:`regularizers.warp.warp_affine`).
    Parameters are drawn per item from the engine's seeded ``torch.Generator``.

    ``keep_size=True`` (default) returns the input size, so the model costs what it costs
    on plain input; ``False`` returns Lucid's larger padded canvas
    ``(H + 2*pad - jitter - jitter_after)``. ``copies=N`` (expectation over transformations)
    transforms N independent copies of each item, item-major; objectives average them.
    ``flip``: probability of mirroring an item left-right (folded into the same matrix).
    ``(B, C, H, W) -> (B * copies, C, H', W')``.
    """

    def __init__(self, pad: int = 12, jitter: int = 8, scales: Sequence[float] = DEFAULT_SCALES,
                 degrees: float = 10.0, jitter_after: int = 4, fill: float = 0.5, keep_size: bool = True,
                 copies: int = 1, flip: float = 0.0):
        super().__init__(name="transforms")
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        self.pad, self.jitter, self.jitter_after = pad, jitter, jitter_after
        self.scales, self.degrees, self.fill, self.keep_size = tuple(scales), degrees, fill, keep_size
        self.copies, self.flip = copies, float(flip)

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-item parameters: shifts in px, scale factors, angles in degrees."""
        def shift(n):  # a random crop of size S - n from S: offset in 0..n, centred
            return torch.randint(0, n + 1, (batch, 2), generator=generator).float() - n / 2
        scale_idx = torch.randint(0, len(self.scales), (batch,), generator=generator)
        out = {
            "shift1": shift(self.jitter),
            "scale": torch.tensor(self.scales)[scale_idx],
            "angle": (torch.rand(batch, generator=generator) * 2 - 1) * self.degrees,
            "shift2": shift(self.jitter_after),
        }
        if self.flip:  # drawn only when asked for: runs without flips keep their random stream
            out["flip"] = torch.rand(batch, generator=generator) < self.flip
        return out

    def matrices(self, params: dict[str, torch.Tensor], in_size, out_size) -> torch.Tensor:
        """``(B, 2, 3)`` source->output affine maps about the image centres."""
        (h, w), (ho, wo) = in_size, out_size
        s, a = params["scale"], params["angle"] * math.pi / 180
        cos, sin = s * torch.cos(a), s * torch.sin(a)
        # output = R·S·(p - c_in + shift1) + shift2 + c_out   (pad only grows the canvas)
        t1 = params["shift1"]
        c_in = torch.tensor([(w - 1) / 2, (h - 1) / 2])
        c_out = torch.tensor([(wo - 1) / 2, (ho - 1) / 2])
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        if "flip" in params:  # mirror x about the input centre first: R·S·diag(-1, 1)
            sign = torch.where(params["flip"], -1.0, 1.0)[:, None]
            rot = torch.stack([rot[..., 0] * sign, rot[..., 1]], -1)  # first column (x) negated
        offset = (rot @ (t1 - c_in).unsqueeze(-1)).squeeze(-1) + params["shift2"] + c_out
        return torch.cat([rot, offset.unsqueeze(-1)], -1)

    def transform(self, x, generator):
        if self.copies > 1:
            x = x.repeat_interleave(self.copies, 0)
        b, _, h, w = x.shape
        grow = 0 if self.keep_size else 2 * self.pad - self.jitter - self.jitter_after
        out_size = (h + grow, w + grow)
        m = self.matrices(self.sample(b, generator), (h, w), out_size).to(x.device, x.dtype)
        return warp_affine(x, m, out_size, fill=self.fill)
