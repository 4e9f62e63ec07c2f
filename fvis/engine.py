"""The one optimization loop behind every fvis use: render, prototypes, attacks, prompts."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .hooks import Capture, frozen

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "nadam": torch.optim.NAdam, "rmsprop": torch.optim.RMSprop}


@dataclass
class Result:
    """What :func:`optimize` returns.

    ``input``: final ``param()`` (detached, CPU). ``values``: final objective per item ``(B,)``,
    measured on ``input`` without transforms. ``history``: per-term, per-step, per-item values,
    ``name -> (steps, B)`` (``"objective"`` total, each objective leaf, each penalty).
    ``snapshots``: ``step -> input`` at the requested thresholds.
    ``stopped``: ``None``, or why the run ended early (``"nan"``).
    """

    input: torch.Tensor
    values: torch.Tensor
    history: dict[str, torch.Tensor]
    snapshots: dict[int, torch.Tensor]
    seed: int
    steps: int
    seconds: float
    stopped: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


def optimize(model: torch.nn.Module, objective, param: torch.nn.Module, regularizers: Sequence = (), *,
             steps: int = 256, lr: float = 0.05, optimizer: str | Callable = "adam", seed: int = 0,
             thresholds: Iterable[int] = (), progress: bool = True, truncate: bool = True) -> Result:
    """Maximize ``objective`` over the input produced by ``param``.

    Each step: ``x = param()``; regularizer transforms (seeded by ``seed``); forward through
    ``model`` with only the needed layers hooked (stopping after the deepest one);
    ``loss = sum over items of (-objective + penalties)``; optimizer step; ``param.after_step()``.
    A non-finite loss stops the run and keeps the last good input. The model's modes,
    ``requires_grad`` flags and hooks are restored afterwards, also on errors.
    """
    generator = torch.Generator().manual_seed(seed)
    opt = OPTIMIZERS[optimizer](param.parameters(), lr=lr) if isinstance(optimizer, str) else optimizer(param.parameters())
    names = _unique_names(regularizers)
    layers = set(objective.layers).union(*(r.layers for r in regularizers))
    thresholds = set(thresholds)
    history: dict[str, list] = {}
    snapshots: dict[int, torch.Tensor] = {}
    stopped, done = None, 0
    start = time.perf_counter()
    with frozen(model), Capture(model, layers, truncate=truncate) as capture:
        acts = capture.plan(param().detach())  # dry run: validates layers/indices, sets truncation
        objective.check(acts)
        for r in regularizers:
            r.check(acts)
        last_good = _copy_state(param)
        bar = tqdm(range(1, steps + 1), disable=not progress, desc="fvis", unit="step", leave=False)
        for step in bar:
            x = param()
            x_in = x
            for r in regularizers:
                x_in = r.transform(x_in, generator)
            acts = capture.forward(x_in)
            trace: dict[str, torch.Tensor] = {}
            value = objective(acts, trace)
            penalties = {n: p for n, r in zip(names, regularizers) if (p := r.penalty(x, acts)) is not None}
            loss = -value.sum() + sum(p.sum() for p in penalties.values())
            if not torch.isfinite(loss):
                stopped = "nan"
                warnings.warn(f"fvis: non-finite loss at step {step}; stopping and keeping step {done}'s input")
                param.load_state_dict(last_good)
                break
            last_good = _copy_state(param)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            param.after_step()
            done = step
            for n, v in {"objective": value.detach(), **trace, **{k: p.detach() for k, p in penalties.items()}}.items():
                history.setdefault(n, []).append(v.float().cpu())
            if step in thresholds:
                snapshots[step] = param().detach().cpu()
            bar.set_postfix(objective=f"{value.mean().item():.4g}")
        with torch.no_grad():
            final = param().detach()
            values = objective(capture.forward(final)).detach().cpu()
    return Result(input=final.cpu(), values=values,
                  history={k: torch.stack(v) for k, v in history.items()}, snapshots=snapshots,
                  seed=seed, steps=done, seconds=time.perf_counter() - start, stopped=stopped)


def _copy_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _unique_names(regularizers) -> list[str]:
    names, seen = [], {}
    for r in regularizers:
        seen[r.name] = seen.get(r.name, 0) + 1
        names.append(r.name if seen[r.name] == 1 else f"{r.name}.{seen[r.name]}")
    return names
