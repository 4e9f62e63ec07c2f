"""The success test of prompt inversions, run inside :func:`fvis.optimize` (:class:`SuccessWatch`):
is each item's current real-token prompt followed by its own target, and does its text
round-trip? It finishes items (one target at a time, or each item), and in harvest mode records
every success and restarts the item from a random prompt, for studies that want many prompts."""
from __future__ import annotations

import math
import time

import torch

from ..hooks import OUTPUT
from ..params import TokenEmbeddings
from ..params.tokens import _init_ids
from ..policies import Policy


class SuccessWatch(Policy):
    """The per-item ``stop`` callable: success of each forwarded item's real-token prompt (greedy
    next tokens equal to its own target, text round-trip). ``owner``: the target index of each
    item; a success finishes every item of that target (``each``: only the item itself). It also
    keeps the best value so far for the progress bar. ``param`` and ``roundtrip`` are set by the
    run. In harvest mode (:meth:`harvest_into`) it is also the policy that restarts items."""

    def __init__(self, targets, owner, param, use_success, each, start):
        self.targets, self.owner, self.param = targets, owner, param
        self.use_success, self.each, self.t0 = use_success, each, start
        self.roundtrip = None
        self.best = -math.inf
        self.success_at: dict[int, float] = {}
        self.reason: str | None = None
        self.wanted = None
        self.harvested: dict[int, list] = {}

    def harvest_into(self, wanted, allowed, length, seed, patience, judge):
        """Harvest mode: up to ``wanted[g]`` distinct prompts per target ``g`` (``found(g, ids)`` is
        called for each); successful or stuck (``patience`` steps) items restart."""
        self.wanted, self.allowed, self.length, self.patience, self.found = wanted, allowed, length, patience, judge
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.age = torch.zeros(len(self.owner), dtype=torch.long)
        self.restart = torch.zeros(len(self.owner), dtype=torch.bool)
        self.seen: set = set()

    def _full(self, g: int) -> bool:
        return len(self.harvested.get(g, [])) >= self.wanted[g]

    def _harvest(self, items, won):
        ids = self.param.ids().cpu() if len(won) else None
        for i in items[won].tolist():
            g, row = int(self.owner[i]), ids[i].tolist()
            if not self._full(g) and (g, tuple(row)) not in self.seen:
                self.seen.add((g, tuple(row)))
                self.harvested.setdefault(g, []).append(row)
                if self.found is not None:
                    self.found(g, row)
        self.age[items] += 1
        self.restart[items[won]] = True
        self.restart |= self.age >= self.patience
        full = torch.tensor([self._full(int(g)) for g in self.owner])
        self.restart &= ~full
        return full[items]

    @torch.no_grad()
    def after_step(self, run) -> None:
        """Harvest mode: the items that succeeded or got stuck start again from random prompts."""
        if self.wanted is None or not self.restart.any():
            return None
        rows = self.restart.nonzero().flatten()
        fresh = _init_ids(self.allowed, len(rows), self.length, None, self.generator).to(self.allowed.device)
        if isinstance(self.param, TokenEmbeddings):
            self.param.embeddings[rows.to(self.param.embeddings.device)] = self.param.table[fresh].float()
        else:
            self.param.set_ids(fresh, rows)
        self.age[rows] = 0
        self.restart[:] = False
        return None

    def __call__(self, acts, values):
        b = values.shape[0]
        self.best = max(self.best, float(values.max()))
        done = torch.zeros(b, dtype=torch.bool)
        if not self.use_success:
            return done
        items = torch.arange(len(self.owner)) if acts.items is None else acts.items.cpu()
        want = self.targets[items]
        greedy = acts[OUTPUT][:, -want.shape[1]:].argmax(-1).cpu()
        hit = (greedy == want).all(1)
        won = torch.zeros(0, dtype=torch.long)
        if hit.any():
            rows = hit.nonzero().flatten()
            ok = self.roundtrip(self.param.ids()[items[rows]].cpu())
            won = rows[ok]
            now = time.perf_counter() - self.t0
            for g in self.owner[items[won]].tolist():
                self.success_at.setdefault(g, now)
            if self.wanted is None and self.each:
                done[won] = True
            elif self.wanted is None:
                done |= torch.isin(self.owner[items], self.owner[items[won]])
        if self.wanted is not None:
            return self._harvest(items, won)
        return done

    def postfix(self, run) -> dict:
        """The progress bar's label: the best p(target) (or objective) so far, targets found."""
        if self.targets is not None:
            return {"best p(target)": f"{math.exp(self.best):.3g}",
                    "found": f"{len(self.success_at)}/{int(self.owner.max()) + 1}"}
        return {"best objective": f"{self.best:.3g}"}
