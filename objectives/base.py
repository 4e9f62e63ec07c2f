"""The objective type and its algebra.

An objective maps captured activations to one score per batch item, shape ``(B,)``.
fvis **maximizes** objectives (loss = -objective + penalties). Objectives compose with
``+ - * /`` (with numbers and with each other) and unary ``-``; values stay per
batch item until the engine's final reduction. ``obj.on(i)`` / ``obj.on(slice)``
restricts an objective to some batch items, so many objectives render in one batch.
"""
from __future__ import annotations

import operator
from typing import Callable, Iterable, Sequence

import torch

from fvis.errors import FvisError
from fvis.hooks import Activations

Number = (int, float)


class Objective:
    """A leaf objective: ``fn(acts) -> (B,)``.

    Args:
        fn: computes the per-item score from :class:`fvis.hooks.Activations`.
        layers: the layer names ``fn`` reads (only these get hooked).
        name: shown in loss histories and reports.
        check: optional ``check(acts)`` run on the dry-forward activations; raises
            :class:`fvis.errors.FvisError` for out-of-range channels etc.
    """

    def __init__(self, fn: Callable[[Activations], torch.Tensor], layers: Iterable[str] = (),
                 name: str = "objective", check: Callable[[Activations], None] | None = None):
        self.fn, self.layers, self.name, self._check = fn, frozenset(layers), name, check

    def __call__(self, acts: Activations, trace: dict | None = None) -> torch.Tensor:
        """Per-item scores ``(B,)``; leaf values are also written to ``trace[name]``."""
        value = self.fn(acts)
        if value.dim() == 0:
            value = value.expand(acts.batch)
        elif acts.copies > 1 and value.shape[0] == acts.batch * acts.copies:
            value = value.view(acts.batch, acts.copies).mean(1)  # expectation over an item's copies
        if trace is not None:
            trace[self.name] = value.detach()
        return value

    def check(self, acts: Activations) -> None:
        if self._check is not None:
            self._check(acts)

    def on(self, items: int | slice | Sequence[int]) -> "Objective":
        """This objective on some batch items only (zero elsewhere)."""
        return _Masked(self, items)

    # algebra -------------------------------------------------------------
    def __add__(self, other): return _combine(operator.add, "+", self, other)
    def __radd__(self, other): return _combine(operator.add, "+", other, self)
    def __sub__(self, other): return _combine(operator.sub, "-", self, other)
    def __rsub__(self, other): return _combine(operator.sub, "-", other, self)
    def __mul__(self, other): return _combine(operator.mul, "*", self, other)
    def __rmul__(self, other): return _combine(operator.mul, "*", other, self)
    def __truediv__(self, other): return _combine(operator.truediv, "/", self, other)
    def __rtruediv__(self, other): return _combine(operator.truediv, "/", other, self)
    def __neg__(self): return _combine(operator.mul, "*", -1, self)

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def _combine(op, symbol: str, a, b):
    if not isinstance(a, (Objective, *Number)) or not isinstance(b, (Objective, *Number)):
        return NotImplemented
    return _Combined(op, symbol, (a, b))


def _label(part) -> str:
    return part.name if isinstance(part, Objective) else f"{part:g}"


class _Combined(Objective):
    """``op(a, b)`` of objectives and/or numbers, computed per item."""

    def __init__(self, op, symbol: str, parts: tuple):
        layers = set().union(*(p.layers for p in parts if isinstance(p, Objective)))
        name = f"({_label(parts[0])} {symbol} {_label(parts[1])})"
        super().__init__(fn=None, layers=layers, name=name)
        self.op, self.parts = op, parts

    def __call__(self, acts, trace=None):
        a, b = (p(acts, trace) if isinstance(p, Objective) else p for p in self.parts)
        return self.op(a, b)

    def check(self, acts):
        for p in self.parts:
            if isinstance(p, Objective):
                p.check(acts)


class _Masked(Objective):
    """An objective restricted to some batch items."""

    def __init__(self, inner: Objective, items):
        label = f"{items.start or 0}:{items.stop if items.stop is not None else ''}" if isinstance(items, slice) else str(items)
        super().__init__(fn=None, layers=inner.layers, name=f"{inner.name}@{label}")
        self.inner, self.items = inner, items

    def __call__(self, acts, trace=None):
        value = self.inner(acts, trace)
        mask = torch.zeros(acts.total, dtype=value.dtype, device=value.device)
        items = self.items if isinstance(self.items, slice) else torch.as_tensor(self.items, device=value.device)
        mask[items] = 1
        mask = acts.rows(mask)
        if trace is not None:
            trace[self.name] = (value * mask).detach()
        return value * mask

    def check(self, acts):
        n = acts.batch
        idx = range(n)[self.items] if isinstance(self.items, slice) else (
            [self.items] if isinstance(self.items, int) else list(self.items))
        bad = [i for i in idx if not -n <= i < n]
        if bad or len(idx) == 0:
            raise FvisError(f"objective {self.inner.name!r} targets batch items {self.items} but the batch has {n}")
        self.inner.check(acts)


def batched(objectives: Sequence[Objective]) -> Objective:
    """Objective ``i`` on batch item ``i``, summed: render a list of objectives in one batch."""
    total = None
    for i, obj in enumerate(objectives):
        total = obj.on(i) if total is None else total + obj.on(i)
    if total is None:
        raise ValueError("batched() needs at least one objective")
    return total
