"""Token parameterizations for language models: continuous prompt embeddings with the PEZ
projection (:class:`TokenEmbeddings`) and a one-hot relaxation (:class:`OneHotTokens`). The
allowed vocabulary comes from :func:`fvis.lm.allowed_tokens`; the language model is used only
through its embedding table (``lm.embedding``), never copied or changed."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import FvisError
from .base import Parameterization

if TYPE_CHECKING:  # the language-model package sits above the plug-ins
    from ..lm import LanguageModel


class _StraightThrough(torch.autograd.Function):
    """Forward: the snapped embeddings exactly; backward: the gradient goes to the continuous ones."""

    @staticmethod
    def forward(ctx, continuous, snapped):
        return snapped.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _init_ids(allowed: torch.Tensor, restarts: int, length: int, init: torch.Tensor | None,
              generator: torch.Generator) -> torch.Tensor:
    pool = allowed.nonzero().flatten().cpu()
    ids = pool[torch.randint(len(pool), (restarts, length), generator=generator)]
    if init is not None:
        init = torch.as_tensor(init, dtype=torch.long).cpu()
        init = init[None] if init.dim() == 1 else init
        if init.shape[-1] != length:
            raise FvisError(f"initial prompt has {init.shape[-1]} tokens but the prompt length is {length}")
        ids[: init.shape[0]] = init[:restarts]
    return ids


class TokenEmbeddings(Parameterization):
    """Continuous prompt embeddings ``() -> (R, K, D)`` for R restarts of K positions.

    Args:
        lm: the :class:`LanguageModel` (its embedding table is used, never copied or changed).
        length: K. restarts: R (the batch).
        allowed: ``(V,)`` bool mask of usable tokens (default: all rows).
        init: token ids ``(K,)`` or ``(r, K)`` for the first restarts; the others start at random
            allowed tokens (seeded by ``seed``).
        metric: ``"cosine"`` or ``"l2"`` nearest-token metric.
        project: PEZ: the forward returns the nearest allowed embeddings exactly (real tokens),
            gradients update the continuous embeddings (straight-through).
        hard_every: every N optimizer steps, set the continuous embeddings to their snapped point (0: never).
    """

    def __init__(self, lm: LanguageModel, length: int, restarts: int = 1, allowed: torch.Tensor | None = None,
                 init: torch.Tensor | None = None, metric: str = "cosine", project: bool = True,
                 hard_every: int = 0, seed: int | None = 0):
        super().__init__()
        if length < 1 or restarts < 1:
            raise FvisError(f"prompt length and restarts must be >= 1, got {length} and {restarts}")
        from regularizers.snap import METRICS  # here, not at the top: `import regularizers` first loads fvis, which loads this module
        if metric not in METRICS:
            raise FvisError(f"snap metric must be one of {', '.join(METRICS)}, got {metric!r}")
        table = lm.embedding
        object.__setattr__(self, "table", table.detach())  # plain attribute: never in state_dict
        self.allowed = allowed if allowed is not None else torch.ones(table.shape[0], dtype=torch.bool)
        self.metric, self.project, self.hard_every = metric, project, int(hard_every)
        self.shape = (restarts, length, table.shape[1])
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        ids = _init_ids(self.allowed, restarts, length, init, g).to(table.device)
        self.embeddings = nn.Parameter(self.table[ids].clone().float())
        self.steps = 0

    def ids(self) -> torch.Tensor:
        """``(R, K)`` nearest allowed token ids of the current embeddings."""
        from regularizers.snap import nearest
        return nearest(self.embeddings, self.table, self.allowed, self.metric)

    def forward(self) -> torch.Tensor:
        if not self.project:
            return self.embeddings
        snapped = self.table[self.ids()].to(self.embeddings.dtype)
        return _StraightThrough.apply(self.embeddings, snapped)

    @torch.no_grad()
    def after_step(self) -> None:
        self.steps += 1
        if self.hard_every and self.steps % self.hard_every == 0:
            self.embeddings.copy_(self.table[self.ids()])


class OneHotTokens(Parameterization):
    """A one-hot relaxation of R prompts of K tokens: ``() -> (R, K, D) = onehot @ table``.
    The one-hot ``(R, K, V)`` stays exactly one-hot (only :class:`GCG` changes it)."""

    def __init__(self, lm: LanguageModel, length: int, restarts: int = 1, allowed: torch.Tensor | None = None,
                 init: torch.Tensor | None = None, seed: int | None = 0):
        super().__init__()
        if length < 1 or restarts < 1:
            raise FvisError(f"prompt length and restarts must be >= 1, got {length} and {restarts}")
        table = lm.embedding
        object.__setattr__(self, "table", table.detach())
        self.allowed = allowed if allowed is not None else torch.ones(table.shape[0], dtype=torch.bool)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        ids = _init_ids(self.allowed, restarts, length, init, g).to(table.device)
        self.onehot = nn.Parameter(nn.functional.one_hot(ids, table.shape[0]).float())
        self.shape = (restarts, length, table.shape[1])

    def ids(self) -> torch.Tensor:
        return self.onehot.argmax(-1)

    @torch.no_grad()
    def set_ids(self, ids: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        rows = torch.arange(ids.shape[0]) if rows is None else rows
        self.onehot[rows] = nn.functional.one_hot(ids, self.onehot.shape[-1]).to(self.onehot.dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` ids -> ``(N, K, D)`` embeddings (what the forward gives for those one-hots)."""
        return self.table[ids].to(self.onehot.dtype)

    def forward(self) -> torch.Tensor:
        return self.onehot @ self.table.to(self.onehot.dtype)
