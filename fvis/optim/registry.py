"""Optimizers by name: :data:`OPTIMIZERS` and :func:`make_optimizer`, which :func:`fvis.optimize`
calls to turn its ``optimizer=`` (a name or a factory) into an optimizer."""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import FvisError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "nadam": torch.optim.NAdam, "rmsprop": torch.optim.RMSprop}


def make_optimizer(optimizer: str | Callable, params, lr: float) -> torch.optim.Optimizer:
    """An optimizer by name (fused kernels where torch has them) or from a factory ``f(params)``."""
    if callable(optimizer):
        return optimizer(params)
    if optimizer not in OPTIMIZERS:
        raise FvisError(f"unknown optimizer {optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
    params = list(params)
    cls = OPTIMIZERS[optimizer]
    if cls in (torch.optim.Adam, torch.optim.AdamW):
        try:
            return cls(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # fused not available for this device/dtype
            pass
    return cls(params, lr=lr)
