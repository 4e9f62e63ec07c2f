"""The Square attack (Andriushchenko et al. 2020): score-based random search, no gradients.

:class:`Square` is an optimizer with ``uses_gradient = False``: :func:`fvis.optimize` then runs
forward passes only (no autograd, no ``backward()``). Each engine step forwards the current
candidate of every unfinished item (one query each); :meth:`Square.observe` gets its objective
value (the :class:`~fvis.attacks.base.Feed` policy), ``step()`` keeps it if it beats the item's
best so far and writes the next candidate: a random square of side ``s`` (per item), set to
``+-eps`` per channel (L-inf), or a pair of squares whose L2 mass is moved between them
(L2). Every candidate is quantized to 8 bits (norm bound kept) before it is queried, so the
model scores exactly the image that will be saved (the clean image must be 8-bit exact). ``s`` follows the paper's schedule of ``p`` (the fraction of pixels changed): ``p_init``
halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10000 queries (rescaled to the
budget). Queries are counted per item.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch

import objectives

from ..engine import optimize
from ..errors import FvisError
from ..models import ImageModel
from ..param import Perturbation
from ..policies import PerItem, SkipFinalValues
from .base import AttackResult, Feed, check_common, quantize, restarts_loop, setup, success_stop

LOSSES = ("margin", "ce")
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, budget: int) -> float:
    """The paper's schedule: the fraction of pixels a square covers at query ``it`` of ``budget``."""
    it = int(it / budget * 10000)
    return p_init / 2 ** sum(it > t for t in SCHEDULE)


@lru_cache(maxsize=64)
def _pattern(s: int) -> torch.Tensor:
    """The L2 square's pattern: two nested-rectangle halves of opposite sign, unit norm."""
    def rectangles(h, w):
        d = torch.zeros(h, w)
        ch, cw = h // 2, w // 2
        for k in range(max(ch + 1, cw + 1)):
            d[max(ch - k, 0):min(ch + k + 1, h), max(cw - k, 0):min(cw + k + 1, w)] += 1.0 / (k + 1) ** 2
        return d / d.norm()
    d = torch.cat([rectangles(s // 2, s), -rectangles(s - s // 2, s)])
    return d / d.norm()


def _eta(s: int, generator) -> torch.Tensor:
    """:func:`_pattern`, transposed with probability 1/2."""
    d = _pattern(s)
    return d.T.contiguous() if torch.rand(1, generator=generator).item() > 0.5 else d


class Square(torch.optim.Optimizer):
    """Random-search steps for a :class:`~fvis.param.Perturbation` (see the module docstring).

    ``budget``: queries per item the schedule is laid out for (the run's steps). ``queries``:
    ``(B,)`` forwards counted per item. The first forward evaluates the initialization (vertical
    stripes of ``+-eps`` for L-inf; a grid of L2 squares scaled to norm ``eps``)."""

    uses_gradient = False  # fvis.optimize: forward passes only

    def __init__(self, param: Perturbation, budget: int, p_init: float = 0.8, seed: int = 0):
        super().__init__([param.adv], {"lr": 0.0})
        self.param, self.budget, self.p_init = param, budget, p_init
        self.generator = torch.Generator().manual_seed(seed)
        b, c, h, w = param.shape
        device = param.adv.device
        self.queries = torch.zeros(b, dtype=torch.long)
        self.it, self.values = 0, None
        self.f_best = torch.full((b,), -torch.inf, device=device)
        with torch.no_grad():
            if param.norm == "linf":
                stripes = self._signs((b, c, 1, w)) * param.eps
                init = (param.image + stripes.to(device)).clamp(0, 1)
            else:
                s = h // 5
                delta = torch.zeros(b, c, h, w)
                start = (h - s * 5) // 2
                for vh in range(start, start + s * (h // s) - s + 1, s):
                    for vw in range(start, start + s * (w // s) - s + 1, s):
                        if vh + s <= h and vw + s <= w:
                            delta[:, :, vh:vh + s, vw:vw + s] += _eta(s, self.generator) * self._signs((b, c, 1, 1))
                delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * param.eps
                init = (param.image + delta.to(device)).clamp(0, 1)
            param.adv.copy_(quantize(param.image, init, param.eps, param.norm))  # queries are 8-bit images
        self.x_best = param.adv.detach().clone()

    def _signs(self, shape) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=self.generator).float() * 2 - 1

    def _int(self, high: int) -> int:
        return int(torch.randint(0, high + 1, (1,), generator=self.generator))

    def observe(self, values: torch.Tensor, todo=None) -> None:
        self.values = values
        self.queries += (~torch.isnan(values)).cpu().long()  # counted here: the run may end before step()

    @torch.no_grad()
    def step(self, closure=None):
        if self.values is None:
            raise FvisError("Square needs the objective values of its candidates (the Feed policy)")
        p, f = self.param.adv, self.values.to(self.f_best.device)
        seen = ~torch.isnan(f)
        better = seen & (f > self.f_best)
        self.x_best[better], self.f_best[better] = p[better], f[better]
        eps, clean = self.param.eps, self.param.image
        _, c, h, w = self.param.shape
        prop = self.budget if self.budget > 1 else 2
        frac = p_selection(self.p_init, self.it, prop)
        new = self.x_best.clone()
        for i in seen.nonzero().flatten().tolist():
            if self.param.norm == "linf":
                s = min(max(int(round(math.sqrt(frac * h * w))), 1), h - 1)
                vh, vw = self._int(h - s), self._int(w - s)
                window = new[i, :, vh:vh + s, vw:vw + s]
                for _ in range(10):  # resample the signs until the window changes (as in the paper)
                    cand = (clean[i, :, vh:vh + s, vw:vw + s] + eps * self._signs((c, 1, 1)).to(p.device)).clamp(0, 1)
                    if (cand - window).abs().max() > 1e-7:
                        break
                new[i, :, vh:vh + s, vw:vw + s] = cand
            else:
                new[i] = self._l2(new[i], clean[i], frac)
        p.copy_(quantize(clean, new, eps, self.param.norm))  # what is queried is what will be saved
        self.it += 1
        return None

    def _l2(self, x: torch.Tensor, clean: torch.Tensor, frac: float) -> torch.Tensor:
        """One L2 proposal: a new square pattern at window 1 (plus its old content), the mass of
        window 2 moved into it, renormalized to norm ``eps``."""
        c, h, w = x.shape
        eps = self.param.eps
        s = min(max(int(round(math.sqrt(frac * h * w))), 3), h - 1)
        s += 1 - s % 2 if s < h - 1 else 0
        delta = x - clean
        vh, vw, vh2, vw2 = self._int(h - s), self._int(w - s), self._int(h - s), self._int(w - s)
        mask = torch.zeros(1, h, w, device=x.device)
        mask[:, vh:vh + s, vw:vw + s] = 1
        mask[:, vh2:vh2 + s, vw2:vw2 + s] = 1
        norm_windows = (delta * mask).norm()
        old = delta[:, vh:vh + s, vw:vw + s]
        old_norm = old.flatten(1).norm(dim=1).view(c, 1, 1)
        pattern = _eta(s, self.generator).to(x.device) * self._signs((c, 1, 1)).to(x.device)
        pattern = pattern + old / (old_norm + 1e-12)
        room = (max(eps ** 2 - float(delta.norm()) ** 2, 0.0) / c + float(norm_windows) ** 2) ** 0.5
        pattern = pattern / (pattern.flatten(1).norm(dim=1).view(c, 1, 1) + 1e-12) * room
        delta = delta.clone()
        delta[:, vh2:vh2 + s, vw2:vw2 + s] = 0
        delta[:, vh:vh + s, vw:vw + s] = pattern
        delta = delta / (delta.norm() + 1e-12) * eps
        return (clean + delta).clamp(0, 1)


def square(model: ImageModel, images: torch.Tensor, *, target: int | Sequence[int] | None = None,
           labels: Sequence[int] | torch.Tensor | None = None, eps: float = 8 / 255, norm: str = "linf",
           steps: int = 1000, loss: str = "margin", restarts: int = 1, p_init: float = 0.8,
           early_stop: bool = True, seed: int = 0, progress: bool = True) -> AttackResult:
    """The Square attack within an ``eps``-ball (same call shape as :func:`fvis.attacks.pgd`).

    ``steps``: queries (forward passes) per item and restart, the initialization included;
    ``loss``: ``"margin"`` (the paper's untargeted loss) or ``"ce"`` (its targeted one).
    ``result.queries`` counts the forwards each item used. The model is never differentiated.
    """
    check_common(eps, norm, steps, restarts)
    if loss not in LOSSES:
        raise FvisError(f"unknown Square loss {loss!r}: choose from {', '.join(LOSSES)}")
    if not 0 < p_init <= 1:
        raise FvisError(f"p_init must be in (0, 1], got {p_init}")
    s = setup(model, images, target, labels)

    def one_run(todo, r):
        cls = s.classes[todo]
        param = Perturbation(s.clean[todo], eps, norm).to(s.device)
        opt = Square(param, steps, p_init, seed=seed + r)
        objective = (objectives.targeted if s.targeted else objectives.untargeted)(cls, loss)
        per_item = PerItem(stop=success_stop(cls, s.targeted) if early_stop else None, skip_done=True)
        result = optimize(model, objective, param, steps=steps, optimizer=lambda params: opt, seed=seed + r,
                          progress=progress, policies=[Feed(opt), per_item, SkipFinalValues()])
        done = result.done if result.done is not None else torch.zeros(todo.numel(), dtype=torch.bool)
        adv = torch.where(done.view(-1, 1, 1, 1), result.input, opt.x_best.cpu())  # the last proposal is unseen
        used = result.done_step if result.done_step is not None else torch.full((todo.numel(),), result.steps)
        return adv, used, opt.queries

    settings = {"method": "square", "eps": eps, "norm": norm, "queries": steps, "loss": loss, "restarts": restarts,
                "p_init": p_init, "early_stop": early_stop, "seed": seed, "targeted": s.targeted}
    return restarts_loop(model, s, eps, norm, restarts, one_run, settings)
