"""Auto-PGD (Croce & Hein 2020, Algorithm 1) on :func:`fvis.optimize`: APGD-CE, APGD-DLR and the
targeted APGD-T over the top-k classes.

:class:`APGD` is an optimizer for a :class:`~fvis.param.Perturbation`; the :class:`Feed` policy
hands it each step's per-item objective values. Step size starts at ``2 eps``; momentum 0.75
(none on the first step); checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``. At a checkpoint an item's step size is
halved, and it restarts from its best point (with that point's gradient), when (1) the objective
rose in at most ``rho = 0.75`` of the steps since the last checkpoint, or (2) the step size was
not halved at the last checkpoint and the best objective has not improved since.
"""
from __future__ import annotations

from typing import Sequence

import torch

import objectives
import regularizers as reg

from ..engine import optimize
from ..errors import FvisError
from ..models import ImageModel
from ..param import Perturbation
from ..policies import PerItem, SkipFinalValues
from .base import AttackResult, Feed, check_common, restarts_loop, setup, success_stop

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The steps (before the last) after which APGD may halve its step size (the paper's ``w_j``, as in the
    reference code: first after ``max(int(0.22 N), 1)`` steps, then intervals shrinking by
    ``max(int(0.03 N), 1)`` down to ``max(int(0.06 N), 1)``)."""
    k, k_min, decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    points, at = [], 0
    while at + k < steps:
        at += k
        points.append(at)
        k = max(k - decr, k_min)
    return points


class APGD(torch.optim.Optimizer):
    """The APGD update for one :class:`~fvis.param.Perturbation` of ``B`` items, ``steps`` long.

    Call :meth:`observe` with the objective values of the current iterate (``(B,)``, NaN for
    items not forwarded), then ``step()`` with the gradient of the loss (``-objective``) in
    ``param.adv.grad``. ``halved``: ``(step, (B,) bool)`` for every checkpoint (for tests).
    """

    def __init__(self, param: Perturbation, steps: int, rho: float = 0.75, momentum: float = 0.75):
        super().__init__([param.adv], {"lr": 2 * param.eps})
        self.param, self.rho, self.momentum = param, rho, momentum
        b, device = param.shape[0], param.adv.device
        self.eta = torch.full((b,), 2 * param.eps, device=device)
        self.k = max(int(0.22 * steps), 1)
        self.k_min, self.decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        self.history: list[torch.Tensor] = []  # f(x_0), f(x_1), ... per item
        self.since = 0  # steps since the last checkpoint
        self.steps_done = 0
        self.values: torch.Tensor | None = None
        self.halved: list[tuple[int, torch.Tensor]] = []

    def observe(self, values: torch.Tensor, todo=None) -> None:
        self.values = values

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        clean, eps = self.param.image, self.param.eps
        if self.param.norm == "linf":
            return torch.min(torch.max(x, clean - eps), clean + eps).clamp(0, 1)
        d = x - clean
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return (clean + d / (n + 1e-12) * n.clamp(max=eps)).clamp(0, 1)

    @torch.no_grad()
    def step(self, closure=None):
        p = self.param.adv
        if p.grad is None or self.values is None:
            raise FvisError("APGD needs the objective values (the Feed policy) and a gradient")
        x, g, f = p.detach().clone(), -p.grad, self.values.to(p.device)
        first = not self.history
        if first:
            self.x_best, self.g_best, self.f_best = x.clone(), g.clone(), f.clone()
            self.f_best_last, self.reduced_last = f.clone(), torch.ones_like(f, dtype=torch.bool)
            self.x_prev = x.clone()
        else:
            up = f > self.f_best
            self.x_best[up], self.g_best[up], self.f_best[up] = x[up], g[up], f[up]
            self.since += 1
            if self.since == self.k:
                rises = sum((self.history[-i] > self.history[-i - 1]).float()
                            for i in range(1, self.k)) + (f > self.history[-1]).float()
                reduce = (rises <= self.k * self.rho) | (~self.reduced_last & (self.f_best_last >= self.f_best))
                self.reduced_last, self.f_best_last = reduce.clone(), self.f_best.clone()
                self.halved.append((self.steps_done, reduce.cpu()))
                self.eta[reduce] /= 2
                x[reduce], g[reduce] = self.x_best[reduce], self.g_best[reduce]
                self.since, self.k = 0, max(self.k - self.decr, self.k_min)
        self.history.append(f)
        eta = self.eta.view(-1, 1, 1, 1)
        if self.param.norm == "linf":
            z = self._project(x + eta * g.sign())
        else:
            z = self._project(x + eta * g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12))
        a = 1.0 if first else self.momentum
        new = self._project(x + a * (z - x) + (1 - a) * (x - self.x_prev))
        self.x_prev = x
        p.copy_(new)
        self.steps_done += 1
        self.param_groups[0]["lr"] = float(self.eta.mean())
        return None


def _one(model, s, todo, r, *, eps, norm, steps, loss, targets, seed, eot, early_stop, progress):
    cls = s.classes[todo]
    param = Perturbation(s.clean[todo], eps, norm, random_start=True, seed=seed + r).to(s.device)
    if targets is not None:  # APGD-T: targeted DLR toward targets[todo], success = leaving the label
        objective = objectives.adversarial.dlr_targeted(targets[todo], cls)
    elif s.targeted:
        objective = objectives.targeted(cls, "ce") if loss == "ce" else objectives.adversarial.dlr_targeted(
            cls, s.labels[todo])
    else:
        objective = objectives.untargeted(cls, loss)
    opt = APGD(param, steps)
    stop = success_stop(cls, s.targeted, saved=(model, param, s.clean[todo], eps, norm)) if early_stop else None
    per_item = PerItem(stop=stop, keep_best=True, skip_done=True)
    result = optimize(model, objective, param, [reg.TransformRobustness(copies=eot)] if eot else [], steps=steps,
                      optimizer=lambda params: opt, seed=seed + r, progress=progress,
                      policies=[Feed(opt), per_item, SkipFinalValues()])
    used = result.done_step if result.done_step is not None else torch.full((todo.numel(),), result.steps)
    return result.input, used, None


def apgd(model: ImageModel, images: torch.Tensor, *, target: int | Sequence[int] | None = None,
         labels: Sequence[int] | torch.Tensor | None = None, eps: float = 8 / 255, norm: str = "linf",
         steps: int = 100, loss: str = "ce", restarts: int = 1, targets: int = 0, eot: int = 0,
         early_stop: bool = True, seed: int = 0, progress: bool = True) -> AttackResult:
    """APGD within an ``eps``-ball (same call shape as :func:`fvis.attacks.pgd`).

    ``loss``: ``"ce"`` or ``"dlr"``. ``targets = k > 0`` (untargeted goal only): APGD-T, i.e.
    for each of the classes ranked 2..k+1 by the clean logits in turn, ``restarts`` runs of the
    targeted DLR loss toward it on the items still correctly classified (AutoAttack: k = 9).
    With ``target``: targeted APGD toward it (``ce``, or targeted DLR against the clean top-1).
    Each item stops once it succeeds; otherwise it returns its best iterate by the objective.
    """
    check_common(eps, norm, steps, restarts)
    if loss not in LOSSES:
        raise FvisError(f"unknown APGD loss {loss!r}: choose from {', '.join(LOSSES)}")
    if targets < 0 or (targets and target is not None):
        raise FvisError("targets (APGD-T's top-k) must be >= 0 and is for untargeted attacks")
    s = setup(model, images, target, labels)
    with torch.no_grad():
        clean_logits = model(s.clean)
    s.labels = clean_logits.argmax(1)
    options = dict(eps=eps, norm=norm, steps=steps, loss=loss, eot=eot, early_stop=early_stop, progress=progress)
    settings = {"method": "apgd-t" if targets else "apgd", "eps": eps, "norm": norm, "steps": steps,
                "loss": "dlr-targeted" if targets else loss, "restarts": restarts, "targets": targets, "eot": eot,
                "early_stop": early_stop, "seed": seed, "targeted": s.targeted, "momentum": 0.75, "rho": 0.75}
    if not targets:
        return restarts_loop(model, s, eps, norm, restarts,
                             lambda todo, r: _one(model, s, todo, r, targets=None, seed=seed, **options), settings)
    if targets >= clean_logits.shape[1]:
        raise FvisError(f"targets must be < the number of classes ({clean_logits.shape[1]})")
    order = clean_logits.argsort(1, descending=True)
    # each target rank is a block of `restarts` runs; the loop keeps each item's best over all of them
    rank_of_run = [t for t in range(1, targets + 1) for _ in range(restarts)]

    def run(todo, r):
        return _one(model, s, todo, r % restarts, targets=order[:, rank_of_run[r]], seed=seed, **options)

    return restarts_loop(model, s, eps, norm, len(rank_of_run), run, settings)
