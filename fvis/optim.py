"""Steepest-ascent optimizers for adversarial perturbations (I-FGSM / PGD, MI-FGSM).

They are ordinary ``torch.optim.Optimizer``s, so :func:`fvis.optimize` runs them like Adam.
Parameters must be batch-first: step directions are normalized per item.
"""
from __future__ import annotations

import torch

from .engine import SearchOptimizer  # noqa: F401  (the search-optimizer protocol lives with the loop that steps it)
from .engine import make_optimizer


def _per_item(t: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (t.dim() - 1)))


class SteepestDescent(torch.optim.Optimizer):
    """``p -= lr * direction(grad)``, the direction being steepest for the norm ball:
    ``norm="linf"``: ``sign(g)`` (I-FGSM / PGD); ``norm="l2"``: ``g / ||g||_2`` per item (PGD-L2).

    ``momentum=mu > 0`` accumulates per-item L1-normalized gradients first,
    ``m = mu * m + g / mean|g|`` (MI-FGSM, Dong et al. 2018; ``mu = 1`` is theirs).
    """

    def __init__(self, params, lr: float, norm: str = "linf", momentum: float = 0.0):
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if lr <= 0 or momentum < 0:
            raise ValueError(f"need lr > 0 and momentum >= 0, got lr={lr}, momentum={momentum}")
        super().__init__(params, {"lr": lr, "norm": norm, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["momentum"]:
                    mean_abs = g.abs().flatten(1).mean(1).clamp_min(1e-12)
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(g / _per_item(g, mean_abs))
                    g = buf
                if group["norm"] == "linf":
                    direction = g.sign()
                else:
                    direction = g / _per_item(g, g.flatten(1).norm(dim=1).clamp_min(1e-12))
                p.sub_(group["lr"] * direction)
        return loss


class Scheduled:
    """An optimizer whose learning rate follows ``schedule``: ``step()`` steps the optimizer, then
    the schedule (a ``torch.optim.lr_scheduler`` built on it). Duck-types what
    :func:`fvis.optimize` calls (``zero_grad``, ``step``, ``param_groups``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule):
        self.optimizer, self.schedule = optimizer, schedule

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.optimizer.step()
        self.schedule.step()


def cosine(steps: int, lr: float, floor: float = 0.1, optimizer: str = "adam"):
    """Factory for :func:`fvis.optimize`'s ``optimizer=``: ``optimizer`` with its learning rate
    going from ``lr`` down to ``floor * lr`` along a half cosine over ``steps``."""
    def make(params):
        opt = make_optimizer(optimizer, params, lr)
        return Scheduled(opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=floor * lr))
    return make
