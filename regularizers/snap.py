"""Nearest-embedding snapping: pull each optimized position toward its nearest allowed vocabulary
embedding, so that continuous prompt embeddings end up on real tokens.

``nearest(x, table, allowed, metric)`` finds the nearest allowed row; :class:`Snap` is the
penalty (distance to it, with a weight schedule). The projection modes (forward at the snapped
point with straight-through gradients, periodic hard snaps) live in the embedding
parameterization, :class:`fvis.invert.TokenEmbeddings`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .base import Regularizer

METRICS = ("cosine", "l2")


def distance(x: torch.Tensor, e: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-row distance ``(..., D), (..., D) -> (...)``: ``l2`` squared Euclidean; ``cosine``
    ``1 - cos = ||x/|x| - e/|e|||^2 / 2``. Exactly 0 when ``x`` equals ``e`` bit for bit."""
    if metric == "l2":
        return (x - e).pow(2).sum(-1)
    return 0.5 * (F.normalize(x, dim=-1) - F.normalize(e, dim=-1)).pow(2).sum(-1)


class _Index:
    """Caches the normalized table (cosine) or half squared norms (l2) of one embedding table."""

    def __init__(self):
        self._key = None
        self._aux = None

    def aux(self, table: torch.Tensor, metric: str) -> torch.Tensor:
        key = (table.data_ptr(), table._version, tuple(table.shape), metric, table.device)
        if key != self._key:
            with torch.no_grad():
                self._aux = F.normalize(table.float(), dim=-1) if metric == "cosine" else 0.5 * table.float().pow(2).sum(-1)
            self._key = key
        return self._aux


_INDEX = _Index()


@torch.no_grad()
def nearest(x: torch.Tensor, table: torch.Tensor, allowed: torch.Tensor | None = None, metric: str = "cosine",
            candidates: int = 4) -> torch.Tensor:
    """Ids of the nearest allowed rows of ``table`` ``(V, D)`` for ``x`` ``(..., D) -> (...)`` long.

    A matrix product ranks all rows (banned rows masked out); the best ``candidates`` are then
    compared with the exact :func:`distance`, so a row that *is* a vocabulary embedding maps to it.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    shape = x.shape[:-1]
    flat = x.detach().reshape(-1, x.shape[-1]).float()
    aux = _INDEX.aux(table, metric)
    if metric == "cosine":
        scores = F.normalize(flat, dim=-1) @ aux.T
    else:
        scores = flat @ table.float().T - aux
    if allowed is not None:
        scores.masked_fill_(~allowed.to(scores.device), -torch.inf)
    k = min(candidates, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    exact = distance(flat[:, None, :], table.float()[top], metric)
    if allowed is not None:
        exact = exact.masked_fill(~allowed.to(top.device)[top], torch.inf)
    best = top.gather(1, exact.argmin(1, keepdim=True)).squeeze(1)
    return best.view(shape)


class Snap(Regularizer):
    """Penalty: mean over positions of the distance from each position ``x[b, k]`` to its nearest
    allowed vocabulary embedding, times the current weight. ``x``: ``(B, K, D)`` -> ``(B,)``.

    Args:
        table: the embedding table ``(V, D)`` (e.g. ``lm.embedding``).
        allowed: ``(V,)`` bool mask of tokens that may be used (None: all).
        metric: ``"cosine"`` or ``"l2"`` (squared Euclidean).
        weight: final weight. start_weight, ramp_steps: the weight goes linearly from
            ``start_weight`` to ``weight`` over the first ``ramp_steps`` gradient steps.
        schedule: optional ``f(step) -> weight`` (step counts from 0), overriding the ramp.
        source: optional ``f(x) -> (B, K, D)``: what to measure instead of ``x`` itself. When the
            parameterization projects its forward onto the vocabulary (PEZ), ``x`` is already a
            vocabulary embedding; pass ``lambda x: param.embeddings`` to pull the continuous ones.

    The schedule advances once per penalty evaluation with gradients enabled (i.e. once per
    optimizer step of :func:`fvis.optimize`); ``reset()`` starts it over.
    """

    def __init__(self, table: torch.Tensor, allowed: torch.Tensor | None = None, metric: str = "cosine",
                 weight: float = 1.0, start_weight: float | None = None, ramp_steps: int = 0,
                 schedule: Callable[[int], float] | None = None, source: Callable | None = None,
                 name: str = "snap"):
        super().__init__(weight, name)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.table, self.allowed, self.metric = table, allowed, metric
        self.start_weight = self.weight if start_weight is None else float(start_weight)
        self.ramp_steps, self.schedule = int(ramp_steps), schedule
        self.source = source
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def current_weight(self) -> float:
        if self.schedule is not None:
            return float(self.schedule(self.step))
        if self.ramp_steps <= 0 or self.step >= self.ramp_steps:
            return self.weight
        return self.start_weight + (self.weight - self.start_weight) * self.step / self.ramp_steps

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, D) -> (B, K)`` distance of each position to its nearest allowed embedding."""
        ids = nearest(x, self.table, self.allowed, self.metric)
        return distance(x, self.table[ids].to(x.dtype), self.metric)

    def penalty(self, x, acts):
        w = self.current_weight()
        if torch.is_grad_enabled():
            self.step += 1
        src = self.source(x) if self.source is not None else x
        if src.shape[0] != x.shape[0]:
            if torch.is_grad_enabled() and acts is not None and src.shape[0] == acts.total:
                src = acts.rows(src)  # a step over the unfinished items only: their rows of the source
            else:  # scoring other inputs than the parameterization's (search steps)
                src = x
        return w * self.distances(src).mean(-1)
