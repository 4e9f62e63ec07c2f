"""Greedy coordinate gradient (Zou et al. 2023) over one-hot token prompts, stepped by
:func:`fvis.optimize` as ``step(score)`` (the :class:`fvis.optim.SearchOptimizer` protocol)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..errors import FvisError
from .snap_search import _live

if TYPE_CHECKING:  # used through its methods only; the parameterizations sit above the core
    from ..params.tokens import OneHotTokens


class GCG(torch.optim.Optimizer):
    """Greedy coordinate gradient (Zou et al. 2023) as an optimizer for :class:`OneHotTokens`.

    Each ``step(score)``: from the one-hot gradient, the ``topk`` most promising allowed tokens
    per position; ``candidates`` single-token swaps per restart sampled from them (position
    uniform); candidates failing ``keep(ids) -> (N,) bool`` (e.g. the text round-trip) are
    dropped; all are scored exactly with ``score(embeddings) -> (N,)`` (higher is better, passed
    by :func:`fvis.optimize`); each restart moves to its best candidate (``greedy``: only if it
    beats the current prompt). ``lr`` is unused (kept for the optimizer interface).
    ``active() -> (R,) bool``: the restarts still searching (finished ones get no candidates);
    each scored row is passed to ``score`` with its restart's batch position.
    """

    scores_inputs = True  # fvis.optimize passes its scoring function to step()

    def __init__(self, params, param: OneHotTokens, topk: int = 128, candidates: int = 64, chunk: int = 512,
                 keep: Callable[[torch.Tensor], torch.Tensor] | None = None, greedy: bool = False, seed: int = 0,
                 active: Callable[[], torch.Tensor] | None = None):
        super().__init__(params, {"lr": 0.0})
        self.param, self.topk, self.candidates, self.chunk = param, int(topk), int(candidates), int(chunk)
        self.keep, self.greedy, self.active = keep, greedy, active
        self.generator = torch.Generator().manual_seed(seed)
        self.last_scores: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, score: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if score is None:
            raise FvisError("GCG needs a scoring function: run it through fvis.optimize")
        p = self.param
        grad = p.onehot.grad
        if grad is None:
            return None
        r, k, v = p.onehot.shape
        cur = p.ids()
        masked = grad.masked_fill(~p.allowed.to(grad.device), torch.inf)
        top = (-masked).topk(min(self.topk, int(p.allowed.sum())), dim=-1).indices  # (R, K, topk)
        c = self.candidates
        pos = torch.randint(k, (r, c), generator=self.generator).to(cur.device)
        pick = torch.randint(top.shape[-1], (r, c), generator=self.generator).to(cur.device)
        rows = torch.arange(r, device=cur.device)[:, None].expand(r, c)
        new = top[rows, pos, pick]  # (R, C)
        cand = cur[:, None, :].repeat(1, c, 1)
        cand.scatter_(2, pos[..., None], new[..., None])
        if self.greedy:
            cand = torch.cat([cur[:, None, :], cand], 1)  # the current prompt competes too
        flat = cand.reshape(-1, k)
        per = cand.shape[1]
        live = _live(self.active, r).to(flat.device).repeat_interleave(per)
        ok = live.clone()
        if self.keep is not None and live.any():
            ok[live] = torch.as_tensor(self.keep(flat[live]), dtype=torch.bool, device=flat.device)
        values = torch.full((flat.shape[0],), -torch.inf, device=flat.device)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(p.embed(flat[part]), part // per).float()
        values = values.view(r, -1)
        best = values.argmax(1)
        found = torch.isfinite(values[torch.arange(r), best])  # a restart with no valid candidate stays
        if found.any():
            chosen = cand[torch.arange(r), best]
            p.set_ids(chosen[found], torch.arange(r, device=cur.device)[found])
        self.last_scores = values.max(1).values
        return None
