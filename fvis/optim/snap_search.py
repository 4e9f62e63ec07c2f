"""The embed method's search optimizer over continuous prompt embeddings: gradient steps, then a
scored snap to real tokens (:class:`SnapSearch`), stepped by :func:`fvis.optimize` as ``step(score)``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # used through its methods only; the parameterizations sit above the core
    from ..params.tokens import TokenEmbeddings


class SnapSearch(torch.optim.Optimizer):
    """The embed method's optimizer for :class:`TokenEmbeddings`.

    ``step(score)``: move the continuous embeddings (``rule="normalized"``: ``e -= lr * g / |g|``
    per position, so for L2 snapping the nearest tokens of the moved point trade closeness against
    first-order gain; ``rule="adam"``: Adam with ``lr``); then a *scored snap*: ``candidates``
    prompts per restart, made from the current snapped prompt by replacing one (and for half of
    them a second) position with one of the ``nearest`` allowed tokens of that position's moved
    embedding, are filtered by ``keep`` (text round-trip) and scored exactly with ``score``
    (passed by :func:`fvis.optimize`); each restart hard-snaps the changed positions to its best
    candidate (``greedy``: only if it beats the current prompt). ``candidates=0``: no scored snap
    (with ``rule="adam"``: plain PEZ). ``active() -> (R,) bool``: the restarts still searching
    (finished ones get no candidates and stay as they are); each scored row is passed to
    ``score`` with its restart's batch position, for per-item objectives.
    """

    scores_inputs = True

    def __init__(self, params, param: TokenEmbeddings, lr: float, nearest: int = 16, candidates: int = 32,
                 chunk: int = 512, keep: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                 rule: str = "normalized", greedy: bool = True,
                 active: Callable[[], torch.Tensor] | None = None):
        params = list(params)
        self.greedy = greedy
        super().__init__(params, {"lr": lr})
        self.rule, self.lr = rule, lr
        self.inner = torch.optim.Adam(params, lr=lr) if rule == "adam" else None
        self.param, self.nearest, self.candidates, self.chunk, self.keep = param, nearest, candidates, chunk, keep
        self.generator = torch.Generator().manual_seed(seed)
        self.active = active

    def zero_grad(self, set_to_none: bool = True):
        (self.inner or super()).zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, score: Callable[[torch.Tensor], torch.Tensor] | None = None):
        p = self.param
        if self.inner is not None:
            self.inner.step()
        elif p.embeddings.grad is not None:  # normalized gradient step per position
            g = p.embeddings.grad
            p.embeddings.sub_(self.lr * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if not self.candidates or score is None:
            return None
        e = p.embeddings.detach()
        r, k, _ = e.shape
        table = p.table
        if p.metric == "cosine":
            sims = F.normalize(e.reshape(-1, e.shape[-1]), dim=-1) @ F.normalize(table.float(), dim=-1).T
        else:
            flat = e.reshape(-1, e.shape[-1])
            sims = flat @ table.float().T - 0.5 * table.float().pow(2).sum(-1)
        sims.masked_fill_(~p.allowed.to(sims.device), -torch.inf)
        near = sims.topk(self.nearest, dim=1).indices.view(r, k, self.nearest)
        cur = p.ids()
        c = self.candidates
        g = self.generator
        cand = cur[:, None, :].repeat(1, c, 1)
        rows = torch.arange(r)[:, None].expand(r, c)
        for _ in range(2 if k > 1 else 1):  # change one position, and half of the candidates a second one
            pos = torch.randint(k, (r, c), generator=g)
            pick = torch.randint(self.nearest, (r, c), generator=g)
            new = near[rows, pos, pick]
            if _ == 1:
                skip = torch.rand((r, c), generator=g) < 0.5
                new = torch.where(skip, cand.gather(2, pos[..., None]).squeeze(-1), new)
            cand.scatter_(2, pos[..., None], new[..., None])
        cand = torch.cat([cur[:, None, :], cand], 1)
        flat = cand.reshape(-1, k)
        live = _live(self.active, r).repeat_interleave(c + 1)
        ok = live.clone()
        if self.keep is not None and live.any():
            ok[live] = torch.as_tensor(self.keep(flat[live]), dtype=torch.bool)
        ok.view(r, -1)[:, 0] = live.view(r, -1)[:, 0]
        values = torch.full((flat.shape[0],), -torch.inf)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(table[flat[part]].float(), part // (c + 1)).float().cpu()
        values = values.view(r, -1)
        if not self.greedy:
            values[:, 0] = -torch.inf
        best = values.argmax(1)
        moved = (best > 0) & torch.isfinite(values.max(1).values)
        if moved.any():
            chosen = cand[torch.arange(r), best]
            changed = (chosen != cur) & moved[:, None]
            p.embeddings[changed] = table[chosen[changed]].to(p.embeddings.dtype)
        return None


def _live(active: Callable[[], torch.Tensor] | None, r: int) -> torch.Tensor:
    """``(R,)`` bool CPU mask of the restarts still searching (all without ``active``)."""
    return torch.ones(r, dtype=torch.bool) if active is None else torch.as_tensor(active()).bool().cpu()
