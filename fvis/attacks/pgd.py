"""PGD / I-FGSM, MI-FGSM and Adam inside an eps-ball (the attacks ``fvis attack`` has had since
issue 9; bytes unchanged): one :func:`fvis.optimize` run per restart on a
:class:`~fvis.param.Perturbation`, per-item early stop and best-iterate return."""
from __future__ import annotations

from typing import Sequence

import torch

import objectives
import regularizers as reg

from ..engine import optimize
from ..errors import FvisError
from ..models import ImageModel
from ..optim import SteepestDescent
from ..param import Perturbation
from ..policies import PerItem, SkipFinalValues
from .base import AttackResult, check_common, restarts_loop, setup, success_stop

METHODS = ("pgd", "mifgsm", "adam")


def _optimizer(method: str, step_size: float, norm: str):
    if method == "pgd":
        return lambda params: SteepestDescent(params, lr=step_size, norm=norm)
    if method == "mifgsm":
        return lambda params: SteepestDescent(params, lr=step_size, norm=norm, momentum=1.0)
    if method == "adam":
        return lambda params: torch.optim.Adam(params, lr=step_size)
    raise FvisError(f"unknown attack method {method!r}: choose from {', '.join(METHODS)}")


def pgd(model: ImageModel, images: torch.Tensor, *, target: int | Sequence[int] | None = None,
        labels: Sequence[int] | torch.Tensor | None = None, eps: float = 8 / 255, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, method: str = "pgd", loss: str = "ce",
        restarts: int = 1, random_start: bool = True, eot: int = 0, early_stop: bool = True,
        best_iterate: bool = True, kappa: float = 0.0, seed: int = 0, progress: bool = True) -> AttackResult:
    """Find adversarial examples for ``images`` ``(B, C, H, W)`` in [0, 1] within an ``eps``-ball.

    Args:
        target: class(es) to reach (targeted), or ``None`` for untargeted.
        labels: true classes for untargeted attacks (default: the model's clean predictions).
        eps: radius in pixel-value units (``8/255``); norm: ``"linf"`` or ``"l2"``.
        steps, step_size: per restart (step size default ``eps / 4``); method: ``pgd`` (sign
            steps; unit-L2 steps for ``l2``), ``mifgsm`` (momentum 1.0), ``adam``.
        loss: ``"ce"``, ``"margin"`` or ``"dlr"`` (untargeted only). restarts: further runs
            (random start) for items not yet successful. random_start: first run starts inside
            the ball at random.
        eot: > 0: each step averages the loss over ``eot`` random transformations (pad, jitter,
            scale, rotate) so the example survives them.
        early_stop: freeze each item once it succeeds by a logit margin above ``kappa``.
        best_iterate: return each item's best iterate by the objective (default), not the last.
    """
    check_common(eps, norm, steps, restarts)
    if eot < 0:
        raise FvisError("eot must be >= 0")
    step_size = eps / 4 if step_size is None else step_size
    if not step_size > 0:
        raise FvisError(f"step size must be > 0, got {step_size}")
    make_optimizer = _optimizer(method, step_size, norm)
    s = setup(model, images, target, labels)

    def one_run(todo, r):
        cls = s.classes[todo]
        param = Perturbation(s.clean[todo], eps, norm, random_start=random_start or r > 0, seed=seed + r).to(s.device)
        objective = (objectives.targeted if s.targeted else objectives.untargeted)(cls, loss)
        regs = [reg.TransformRobustness(copies=eot)] if eot else []
        stop = success_stop(cls, s.targeted, kappa, saved=(model, param, s.clean[todo], eps, norm)) if early_stop else None
        per_item = PerItem(stop=stop, keep_best=best_iterate, skip_done=True)
        result = optimize(model, objective, param, regs, steps=steps, lr=step_size, optimizer=make_optimizer,
                          seed=seed + r, progress=progress,
                          policies=[per_item, SkipFinalValues()])  # judged by the caller, on 8-bit images
        used = result.done_step if result.done_step is not None else torch.full((todo.numel(),), result.steps)
        return result.input, used, None

    settings = {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size, "method": method, "loss": loss,
                "restarts": restarts, "random_start": random_start, "eot": eot, "early_stop": early_stop,
                "best_iterate": best_iterate, "kappa": kappa, "seed": seed, "targeted": s.targeted}
    return restarts_loop(model, s, eps, norm, restarts, one_run, settings)
