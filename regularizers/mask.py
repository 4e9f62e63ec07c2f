"""Penalties on a feature-isolation mask (see :class:`fvis.isolate.MaskedInput`): small and smooth.

Both read the mask from the parameterization they were built with (``source.mask()`` /
``source.mask_lowres()``), not from the masked image the engine passes in.
"""
from __future__ import annotations

import torch

from .base import Regularizer


class MaskArea(Regularizer):
    """Sparsity: ``weight * mean(mask * w)`` per item; only the items in this forward (``acts.rows``:
    the engine may skip finished ones). ``centre`` = 0: ``w = 1``, the fraction of the input kept.
    ``centre`` > 0 makes the border dearer: ``w = 1 + centre * r^2``, ``r`` the distance from the
    image centre with each axis in units of its half size (elliptical: 1 at the middle of every
    side, 2 ** 0.5 at the corners), so the kept part gathers in one central region; the penalty is
    then a weighted fraction, and on average dearer too (mean ``w`` about ``1 + 2 * centre / 3``)."""

    def __init__(self, source, weight: float = 1.0, centre: float = 0.0):
        super().__init__(weight, name="mask_area")
        if not centre >= 0:
            raise ValueError(f"centre must be >= 0, got {centre}")
        self.mask_fn = source.mask  # a bound method: the parameterization is not registered as a submodule
        self.centre = float(centre)

    def weights(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """``(H, W)`` weight map ``1 + centre * r^2`` (computed in fp32, returned in ``like``'s dtype)."""
        def axis(n):  # -1 .. 1 from one edge's middle to the other's
            return (torch.arange(n, device=like.device, dtype=torch.float32) - (n - 1) / 2) / max((n - 1) / 2, 1)
        y, x = axis(h), axis(w)
        return (1 + self.centre * (y[:, None] ** 2 + x[None, :] ** 2)).to(like.dtype)

    def penalty(self, x, acts):
        mask = self.mask_fn()
        if self.centre:
            mask = mask * self.weights(*mask.shape[-2:], mask)
        return self.weight * acts.rows(mask.flatten(1).mean(1))


class MaskSmoothness(Regularizer):
    """Smoothness: ``weight * total variation`` (mean |difference| of neighbouring cells) of the
    mask at its own (low) resolution, per item in this forward."""

    def __init__(self, source, weight: float = 1.0):
        super().__init__(weight, name="mask_tv")
        self.mask_fn = source.mask_lowres

    def penalty(self, x, acts):
        m = self.mask_fn()
        dy = (m[..., 1:, :] - m[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (m[..., :, 1:] - m[..., :, :-1]).abs().flatten(1).mean(1)
        return self.weight * acts.rows(dx + dy)
