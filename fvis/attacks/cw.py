"""Carlini & Wagner's L2 attack (2017) on :func:`fvis.optimize`: the image in tanh space
(:class:`TanhImage`, always inside the [0, 1] box), Adam on ``||x - x0||^2 + c * f(x)`` with
``f`` the logit margin capped at ``-kappa``, and a binary search over the constant ``c`` per
item (``c`` x10 until a first success, then bisection, decided on the float image as in C&W),
each run stopping when its loss stalls (C&W's early abort: per item, or for the whole batch as in
C&W's code and torchattacks). Each item keeps its smallest successful perturbation, success
judged on the 8-bit image as everywhere in fvis: at the end, each item's candidates (its
``KEEP`` smallest float successes over all steps and constants) are judged in order of size
until one succeeds after rounding (one forward pass of the batch, unless rounding undoes a
success). Not an eps-ball attack: ``eps`` is not a constraint (reports say how large the
perturbations are)."""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch

import objectives
import regularizers as reg

from ..engine import optimize
from ..errors import FvisError
from ..hooks import OUTPUT
from ..models import ImageModel
from ..param import Parameterization
from ..policies import PerItem, Policy, SkipFinalValues
from .base import AttackResult, judge, norms, setup


class TanhImage(Parameterization):
    """``() -> (tanh(w) + 1) / 2``, ``w`` initialized at the image ``(B, C, H, W)`` in [0, 1]."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.shape = tuple(image.shape)
        self.w = torch.nn.Parameter(torch.atanh((image.detach().float() * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)))

    def forward(self) -> torch.Tensor:
        return (torch.tanh(self.w) + 1) / 2


class Distance(reg.Regularizer):
    """The squared L2 distance of each item's input to its clean image (C&W's first term)."""

    name = "l2_squared"

    def __init__(self, clean: torch.Tensor):
        super().__init__()
        self.clean = clean

    def penalty(self, x, acts):
        self.last = x.detach()  # the input of this step (the Smallest policy reads it)
        return (x - acts.rows(self.clean)).flatten(1).pow(2).sum(1)


KEEP = 3  # successful inputs kept per item: if rounding to 8 bits undoes the smallest, the next is tried


class Smallest(Policy):
    """Per item, the ``KEEP`` smallest inputs (by L2; ``best`` / ``l2`` of shape ``(KEEP, B, ...)``,
    smallest first) among the successive improvements of the steps where it reached the goal; and
    C&W's early abort: at steps 0, ``check``, ``2 check``, ... (as in C&W's code), an item whose
    loss did not fall below 0.9999 of its value at the last check is ``stalled`` (the ``PerItem``
    stop rule); with ``whole_batch``, every item is stalled once the batch's summed loss did not.
    ``distance``: the run's :class:`Distance`, which holds each step's input."""

    order = -1  # before PerItem, which asks stop() for ``stalled``

    def __init__(self, clean: torch.Tensor, classes: torch.Tensor, targeted: bool, check: int, distance: Distance,
                 whole_batch: bool = False):
        self.clean, self.classes, self.targeted, self.check, self.distance = clean, classes, targeted, check, distance
        self.whole_batch, self.previous_total = whole_batch, math.inf
        self.best = clean.expand(KEEP, *clean.shape).clone()
        self.l2 = torch.full((KEEP, clean.shape[0]), math.inf, device=clean.device)
        self.previous = torch.full((clean.shape[0],), math.inf, device=clean.device)
        self.stalled = torch.zeros(clean.shape[0], dtype=torch.bool, device=clean.device)

    def observe(self, run, values, acts, todo):
        with torch.no_grad():
            idx = torch.arange(len(self.clean), device=self.clean.device) if todo is None else todo.to(self.clean.device)
            x = self.distance.last
            ok = objectives.adversarial.succeeded(acts[OUTPUT], self.classes[idx], self.targeted)
            l2 = (x - self.clean[idx]).flatten(1).norm(dim=1)
            better = ok & (l2 < self.l2[0, idx])
            j = idx[better]
            self.best[1:, j], self.l2[1:, j] = self.best[:-1, j].clone(), self.l2[:-1, j].clone()
            self.best[0, j], self.l2[0, j] = x[better], l2[better]
            self.stalled = torch.zeros_like(self.stalled)
            if run.step % self.check == 0:  # the loss of this step: -objective + squared distance
                loss = -values.to(l2.device) + l2 ** 2
                if self.whole_batch:
                    self.stalled[idx] = bool(loss.sum() > 0.9999 * self.previous_total)
                    self.previous_total = float(loss.sum())
                else:
                    self.stalled[idx] = loss > 0.9999 * self.previous[idx]
                    self.previous[idx] = loss
        return None


def cw(model: ImageModel, images: torch.Tensor, *, target: int | Sequence[int] | None = None,
       labels: Sequence[int] | torch.Tensor | None = None, eps: float | None = None, norm: str = "l2",
       steps: int = 100, lr: float = 0.01, c: float = 1.0, search_steps: int = 5, kappa: float = 0.0,
       abort_early: bool | str = "item", seed: int = 0, progress: bool = True) -> AttackResult:
    """C&W L2 (same call shape as :func:`fvis.attacks.pgd`; ``eps`` is accepted and ignored).

    ``steps``: Adam steps per constant; ``search_steps``: constants tried per item (binary
    search from ``c``); ``lr``: Adam's; ``kappa``: confidence of the capped margin.
    ``abort_early``: ``"item"`` (or ``True``): each item stops when its own loss stalls (items
    still shrinking go on: smaller perturbations, more steps); ``"batch"``: every item stops when
    the batch's summed loss stalls (C&W's code, torchattacks); ``False``: every step runs.
    """
    if abort_early not in (True, False, "item", "batch"):
        raise FvisError(f"abort_early must be 'item', 'batch' or False, got {abort_early!r}")
    abort_early = "item" if abort_early is True else abort_early
    if norm != "l2":
        raise FvisError("C&W is an L2 attack (norm l2)")
    if steps < 1 or search_steps < 1 or not c > 0 or not lr > 0:
        raise FvisError("steps and search_steps must be >= 1, c and lr > 0")
    s = setup(model, images, target, labels)
    b, device = s.clean.shape[0], s.device
    const = torch.full((b,), float(c), device=device)
    lower, upper = torch.zeros(b, device=device), torch.full((b,), math.inf, device=device)
    # each item's KEEP smallest float successes over all constants, smallest first: (KEEP, B, C, H, W), (KEEP, B)
    pool, sizes = s.clean.expand(KEEP, *s.clean.shape).clone(), torch.full((KEEP, b), math.inf, device=device)
    goal = objectives.targeted if s.targeted else objectives.untargeted
    for k in range(search_steps):
        param = TanhImage(s.clean).to(device)
        scale = const.clone()
        margin = goal(s.classes, "margin", kappa=kappa)
        objective = objectives.Objective(lambda acts, m=margin, w=scale: acts.rows(w) * m(acts), [OUTPUT],
                                         "cw", margin.check)
        distance = Distance(s.clean)
        smallest = Smallest(s.clean, s.classes, s.targeted, max(steps // 10, 1), distance, abort_early == "batch")
        abort = [PerItem(stop=lambda acts, values, sm=smallest: sm.stalled[acts.rows(torch.arange(b, device=device))],
                         skip_done=True)] if abort_early else []
        result = optimize(model, objective, param, [distance], steps=steps, lr=lr, optimizer="adam",
                          seed=seed + k, progress=progress, policies=[smallest, *abort, SkipFinalValues()])
        sizes, order = torch.cat([sizes, smallest.l2]).sort(0)
        sizes, order = sizes[:KEEP], order[:KEEP]
        pool = torch.take_along_dim(torch.cat([pool, smallest.best]), order.view(KEEP, b, 1, 1, 1), dim=0)
        ok = torch.isfinite(smallest.l2[0])
        upper = torch.where(ok, torch.minimum(upper, const), upper)
        lower = torch.where(ok, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
    best, best_prob, failed = _judge_candidates(model, s, pool, sizes, result.input.to(device))
    linf, l2 = norms(s.clean, best)
    settings = {"method": "cw", "norm": "l2", "steps": steps, "search_steps": search_steps, "c": c, "lr": lr,
                "kappa": kappa, "abort_early": abort_early, "seed": seed, "targeted": s.targeted, "eps": None}
    return AttackResult(clean=s.clean.cpu(), adversarial=best.cpu(), classes=s.classes.cpu(), targeted=s.targeted,
                        success=(~failed).cpu(), prob=best_prob.cpu(), linf=linf.cpu(), l2=l2.cpu(),
                        steps=torch.full((b,), steps * search_steps), restart=torch.zeros(b, dtype=torch.long),
                        seconds=time.perf_counter() - s.start, settings=settings)


def _judge_candidates(model, s, pool, sizes, last):
    """Per item, the smallest candidate (``pool`` ``(K, B, C, H, W)``, sorted by float L2
    ``sizes`` ``(K, B)``) that still succeeds on its 8-bit image: ``(best (B, C, H, W), prob (B,),
    failed (B,))``. Items with no float success, or none that survives rounding, get ``last`` (the
    last iterate), judged as it is. One forward pass of the batch for the first rank; the next
    rank only for items whose rounded candidate failed."""
    b, device = s.clean.shape[0], s.clean.device
    best, prob = s.clean.clone(), torch.zeros(b, device=device)
    pending = torch.ones(b, dtype=torch.bool, device=device)
    for rank in range(pool.shape[0]):
        todo = (pending & torch.isfinite(sizes[rank])).nonzero().flatten()
        if todo.numel() == 0:
            break
        adv_q, score, p = judge(model, s.clean[todo], pool[rank, todo], math.inf, "l2", s.classes[todo], s.targeted)
        ok = score > 0
        best[todo[ok]], prob[todo[ok]], pending[todo[ok]] = adv_q[ok], p[ok], False
    if pending.any():  # no success: the last iterate of the last constant, judged as it is
        adv_q, _, p = judge(model, s.clean[pending], last[pending], math.inf, "l2", s.classes[pending], s.targeted)
        best[pending], prob[pending] = adv_q, p
    return best, prob, pending
