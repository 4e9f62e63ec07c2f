"""Learning-rate schedules for :func:`fvis.optimize`: :class:`Scheduled` and :func:`cosine`."""
from __future__ import annotations

import torch

from .registry import make_optimizer


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
