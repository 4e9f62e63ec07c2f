"""Penalties on a feature-isolation mask (see :class:`fvis.isolate.MaskedInput`): small and smooth.

Both read the mask from the parameterization they were built with (``source.mask()`` /
``source.mask_lowres()``), not from the masked image the engine passes in.
"""
from __future__ import annotations

from .base import Regularizer


class MaskArea(Regularizer):
    """Sparsity: ``weight * mean(mask)`` per item (the fraction of the input kept); only the items
    in this forward (``acts.rows``: the engine may skip finished ones)."""

    def __init__(self, source, weight: float = 1.0):
        super().__init__(weight, name="mask_area")
        self.mask_fn = source.mask  # a bound method: the parameterization is not registered as a submodule

    def penalty(self, x, acts):
        return self.weight * acts.rows(self.mask_fn().flatten(1).mean(1))


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
