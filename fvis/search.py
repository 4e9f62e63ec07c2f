"""Search optimizers for token prompts, stepped by :func:`fvis.optimize` as
``step(score)`` (the :class:`fvis.engine.SearchOptimizer` protocol): greedy coordinate gradient
(:class:`GCG`) over :class:`fvis.tokens.OneHotTokens` and the embed method's :class:`SnapSearch`
over :class:`fvis.tokens.TokenEmbeddings`."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .errors import FvisError
from .tokens import OneHotTokens, TokenEmbeddings


class GCG(torch.optim.Optimizer):
    """Greedy coordinate gradient (Zou et al. 2023) as an optimizer for :class:`OneHotTokens`.

    Each ``step(score)``: from the one-hot gradient, the ``topk`` most promising allowed tokens
    per position; ``candidates`` single-token swaps per restart sampled from them (position
    uniform); candidates failing ``keep(ids) -> (N,) bool`` (e.g. the text round-trip) are
    dropped; all are scored exactly with ``score(embeddings) -> (N,)`` (higher is better, passed
    by :func:`fvis.optimize`); each restart moves to its best candidate (``greedy``: only if it
    beats the current prompt). ``lr`` is unused (kept for the optimizer interface).
    """

    scores_inputs = True  # fvis.optimize passes its scoring function to step()

    def __init__(self, params, param: OneHotTokens, topk: int = 128, candidates: int = 64, chunk: int = 512,
                 keep: Callable[[torch.Tensor], torch.Tensor] | None = None, greedy: bool = False, seed: int = 0):
        super().__init__(params, {"lr": 0.0})
        self.param, self.topk, self.candidates, self.chunk = param, int(topk), int(candidates), int(chunk)
        self.keep, self.greedy = keep, greedy
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
        ok = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
        if self.keep is not None:
            ok = torch.as_tensor(self.keep(flat), dtype=torch.bool, device=flat.device)
        values = torch.full((flat.shape[0],), -torch.inf, device=flat.device)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(p.embed(flat[part])).float()
        values = values.view(r, -1)
        best = values.argmax(1)
        found = torch.isfinite(values[torch.arange(r), best])  # a restart with no valid candidate stays
        if found.any():
            chosen = cand[torch.arange(r), best]
            p.set_ids(chosen[found], torch.arange(r, device=cur.device)[found])
        self.last_scores = values.max(1).values
        return None


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
    (with ``rule="adam"``: plain PEZ).
    """

    scores_inputs = True

    def __init__(self, params, param: TokenEmbeddings, lr: float, nearest: int = 16, candidates: int = 32,
                 chunk: int = 512, keep: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                 rule: str = "normalized", greedy: bool = True):
        params = list(params)
        self.greedy = greedy
        super().__init__(params, {"lr": lr})
        self.rule, self.lr = rule, lr
        self.inner = torch.optim.Adam(params, lr=lr) if rule == "adam" else None
        self.param, self.nearest, self.candidates, self.chunk, self.keep = param, nearest, candidates, chunk, keep
        self.generator = torch.Generator().manual_seed(seed)

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
        ok = torch.ones(flat.shape[0], dtype=torch.bool)
        if self.keep is not None:
            ok = torch.as_tensor(self.keep(flat), dtype=torch.bool)
        ok.view(r, -1)[:, 0] = True
        values = torch.full((flat.shape[0],), -torch.inf)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(table[flat[part]].float()).float().cpu()
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


# -- honest evaluation ----------------------------------------------------------------------------
