"""The one regularizer interface: an optional input transform, an optional penalty and, rarely,
gradient filters at named layers (:meth:`Regularizer.gradient_filters`).

The engine, per step:  ``x = param()``; ``x_in = r.transform(x_in, generator)`` for each
regularizer in order; ``acts = model(x_in)``; ``loss = -objective + sum(r.penalty(x, acts))``.
Penalties are per batch item ``(B,)``, already weighted, and *minimized*.
"""
from __future__ import annotations

import torch
from torch import nn

from fvis.hooks import Activations


class Regularizer(nn.Module):
    """Subclass and override :meth:`transform` and/or :meth:`penalty`.

    ``layers`` lists layer names the penalty reads (they get hooked like objectives').
    """

    layers: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0, name: str | None = None):
        super().__init__()
        self.weight = float(weight)
        self.name = name or type(self).__name__

    def transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H', W')``; random draws must use ``generator``."""
        return x

    def penalty(self, x: torch.Tensor, acts: Activations) -> torch.Tensor | None:
        """Per-item penalty ``(B,)`` of the untransformed input ``x`` (``None``: no penalty)."""
        return None

    def gradient_filters(self) -> dict:
        """``{layer: f(activation, grad) -> grad}``: how the gradient flowing back through each layer's
        output is changed in the run (``{}``: not at all; :class:`fvis.hooks.Capture`'s ``grad_filters``)."""
        return {}

    def check(self, acts: Activations) -> None:
        """Validate against the dry-forward activations (e.g. needed layers exist)."""
