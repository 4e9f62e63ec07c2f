"""The protocol that search optimizers (:class:`fvis.optim.GCG`, :class:`fvis.optim.SnapSearch`)
meet, and that :func:`fvis.optimize` checks to pass them its scoring function."""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch


@runtime_checkable
class SearchOptimizer(Protocol):
    """An optimizer that scores candidate inputs exactly instead of (only) following the
    gradient (GCG, snap search). :func:`fvis.optimize` calls ``zero_grad()``, computes the
    gradient, then ``step(score)`` with ``score(x, items=None) -> (N,)``: objective minus
    penalties of N model inputs (``items``: the batch position each row stands for, for
    per-item objectives). ``scores_inputs`` is ``True``."""

    scores_inputs: bool

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self, score: Callable[[torch.Tensor], torch.Tensor]) -> None: ...
