"""How a model's forward (and so its backward) is executed: numeric precision (bf16 autocast) and
``torch.compile``. :class:`fvis.hooks.Capture` applies both; ``fvis render`` and ``fvis prototype``
expose them as ``--precision`` and ``--compile``. Both are off by default: on the CPU neither was
faster in ``results/bench_engine.md``; they are meant for GPU runs.
"""
from __future__ import annotations

import contextlib
import shutil

import torch
from torch import nn

from .errors import FvisError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    """``precision`` if fvis knows it, else a clear error."""
    if precision not in PRECISIONS:
        raise FvisError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device | str, precision: str):
    """A context running the forward in ``precision`` (``torch.autocast``; fp32: nothing)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def compile_reason(device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (``None`` when it can): inductor's CPU
    code needs a C++ compiler (its CUDA code does not)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if torch.device(device).type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "torch.compile needs a C++ compiler on the CPU (g++ or clang++ not found)"
    return None


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, or a clear error where it cannot run (on the model's device)."""
    param = next(model.parameters(), None)
    reason = compile_reason("cpu" if param is None else param.device)
    if reason is not None:
        raise FvisError(reason)
    return torch.compile(model)
