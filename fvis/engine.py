"""The one optimization loop behind every fvis use: render, prototypes, attacks, prompts."""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from .errors import FvisError
from .hooks import Capture, capturing
from .inline import Displayable, Panel, fmt
from .naming import unique
from .optim.protocol import SearchOptimizer
from .optim.registry import OPTIMIZERS, make_optimizer  # noqa: F401  (engine.OPTIMIZERS: an old path)
from .policies import Policy, ProgressBar, Run, Snapshots, result_of, spread

__all__ = ["optimize", "Result", "OPTIMIZERS", "make_optimizer", "SearchOptimizer"]  # the last three: old paths


@dataclass
class Result(Displayable):
    """What :func:`optimize` returns.

    ``input``: the final input, ``param.result()`` or ``param()`` (detached, CPU). ``values``: final objective per item ``(B,)``,
    measured on ``input`` without transforms (``None`` with :class:`~fvis.policies.SkipFinalValues`).
    ``history``: per-term, per-step, per-item values, ``name -> (steps, B)`` (``"objective"``
    total, each objective leaf, each penalty; NaN where ``PerItem(skip_done=True)`` left a
    finished item out). ``snapshots``: ``step -> input`` (:class:`~fvis.policies.Snapshots`).
    ``seconds``: total wall time; ``loop_seconds``: the steps alone. ``steps``: steps completed.
    ``stopped``: ``None``, or why the run ended early (``"nan"``; ``"done"`` when a per-item
    ``stop`` held for every item; ``"time"``; any policy's reason). ``done``: ``(B,)`` items for
    which ``stop`` held; ``done_step``: ``(B,)`` the step at which each item finished (``steps``
    for unfinished ones); both ``None`` without a ``PerItem(stop=...)``.
    """

    input: torch.Tensor
    values: torch.Tensor | None
    history: dict[str, torch.Tensor]
    snapshots: dict[int, torch.Tensor]
    seed: int
    steps: int
    seconds: float
    loop_seconds: float = 0.0
    stopped: str | None = None
    done: torch.Tensor | None = None
    done_step: torch.Tensor | None = None
    labels: list[str] | None = None

    @property
    def seconds_per_step(self) -> float:
        """Wall time of the optimization steps alone (no set-up, no final evaluation)."""
        return self.loop_seconds / max(self.steps, 1)

    def _panel(self) -> Panel:
        labels = self.labels or [f"item {i}" for i in range(len(self.input))]
        if self.values is not None:
            labels = [f"{label}\n{fmt(float(v))}" for label, v in zip(labels, self.values)]
        figures = {"steps": self.steps, "seconds": self.seconds, "s/step": self.seconds_per_step}
        if self.stopped:
            figures["stopped"] = self.stopped
        images = list(self.input) if self.input.dim() == 4 else []  # token inputs have no picture
        return Panel("fvis.optimize", images, labels, figures)


def optimize(model: torch.nn.Module, objective, param: torch.nn.Module, regularizers: Sequence = (), *,
             steps: int = 256, lr: float = 0.05, optimizer: str | Callable = "adam", seed: int = 0,
             policies: Sequence[Policy] = (), progress: bool = True, thresholds: Iterable[int] = ()) -> Result:
    """Maximize ``objective`` over the input produced by ``param``.

    Each step: ``x = param()``; regularizer transforms (seeded by ``seed``); forward through
    ``model`` with only the needed layers hooked (stopping after the deepest one);
    ``loss = sum over items of (-objective + penalties)``; optimizer step; ``param.after_step()``.
    A non-finite loss stops the run and keeps the last good input (``stopped == "nan"``). The
    result is ``param.result()`` where a parameterization has one (the input without its training-only
    randomness: :class:`fvis.params.Transparent` over its backdrop, not a random background), else ``param()``. The
    model's modes, ``requires_grad`` flags and hooks are restored afterwards, also on errors.

    Everything else is a step policy (:mod:`fvis.policies`): per-item stop / keep-best /
    skip-done (:class:`~fvis.policies.PerItem`), snapshots, progress bar, time limit, input
    layout, skipping the closing measurement. ``progress=True`` adds a
    :class:`~fvis.policies.ProgressBar`; ``thresholds`` is short for ``Snapshots(thresholds)``.

    ``optimizer``: a name in :data:`OPTIMIZERS`, a factory ``f(params)``, or a factory of a
    search optimizer (:class:`fvis.optim.SearchOptimizer`, e.g. GCG), stepped as
    ``opt.step(score)`` where ``score(x, items=None) -> (N,)`` is the objective minus penalties of
    any N model inputs ``x`` (no gradients, no transforms; the run's hooks and truncation);
    ``items`` (``(N,)`` batch positions) lets per-item objectives (``acts.rows``, e.g. one target
    per item) score each row as the item it stands for; without it the objective must not
    depend on batch positions (no ``.on()``).
    An optimizer with ``uses_gradient = False`` (the Square attack) gets forward passes only:
    the loop runs without autograd and never calls ``backward()``.
    """
    policies = sorted([*policies, *([Snapshots(thresholds)] if thresholds else []),
                       *([ProgressBar()] if progress else [])], key=lambda p: p.order)
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, param.parameters(), lr)
    names = unique([r.name for r in regularizers], sep=".")
    layers = set(objective.layers).union(*(r.layers for r in regularizers))
    capture_options = {k: v for p in policies for k, v in p.capture.items()}
    grad_filters = {}
    for r in regularizers:
        for k, f in getattr(r, "gradient_filters", dict)().items():
            if k in grad_filters:
                raise FvisError(f"two regularizers filter the gradient at {k!r}; give each layer one filter")
            grad_filters[k] = f
    history: dict[str, list] = {}
    stopped = None
    start = time.perf_counter()
    uses_gradient = getattr(opt, "uses_gradient", True)
    scores_inputs = isinstance(opt, SearchOptimizer) and opt.scores_inputs  # once: a Protocol check is slow
    if grad_filters and not uses_gradient:
        warnings.warn(f"fvis: the optimizer uses no gradient: the gradient filters at {', '.join(grad_filters)} do nothing")
    with capturing(model, layers, grad_filters=grad_filters, **capture_options) as capture, \
            (contextlib.nullcontext() if uses_gradient else torch.no_grad()):
        with torch.no_grad():  # dry run on one transformed item (own generator: the run's draws stay as seeded)
            x_in, dry_generator = param(), torch.Generator().manual_seed(seed)
            batch = x_in.shape[0]
            x_in = x_in[:1] if isinstance(x_in, torch.Tensor) else x_in
            for r in regularizers:
                x_in = r.transform(x_in, dry_generator)
        capture.plan(x_in, 1 if isinstance(x_in, torch.Tensor) else batch)  # layers exist; counts calls for truncation
        checked = False  # objective / regularizer checks (indices, classes, shapes) not run yet
        last_good = {k: v.detach().clone() for k, v in param.state_dict().items()}
        run = Run(param=param, batch=batch, steps=steps)
        try:
            for p in policies:
                p.start(run)
            run.loop_start = loop_start = time.perf_counter()
            for step in range(1, steps + 1):
                todo = next((t for p in policies if (t := p.forward_items(run)) is not None), None)  # None: all
                x = param() if todo is None else param()[todo]
                x_in = x
                for r in regularizers:
                    x_in = r.transform(x_in, generator)
                acts = capture.forward(x_in, batch if todo is None else len(todo))
                if todo is not None:
                    acts = acts.of(todo, batch)
                checked = checked or _check(objective, regularizers, acts)  # on the first step's activations
                trace: dict[str, torch.Tensor] = {}
                value = objective(acts, trace)
                penalties = {n: p for n, r in zip(names, regularizers) if (p := r.penalty(x, acts)) is not None}
                loss = -value.sum() + sum(p.sum() for p in penalties.values())
                if not torch.isfinite(loss):
                    stopped = "nan"
                    warnings.warn(f"fvis: non-finite loss at step {step}; stopping and keeping step {run.step}'s input")
                    param.load_state_dict(last_good)
                    break
                for k, v in param.state_dict().items():  # this input gave a finite loss: keep it
                    last_good[k].copy_(v)
                for n, v in {"objective": value.detach(), **trace, **{k: p.detach() for k, p in penalties.items()}}.items():
                    history.setdefault(n, []).append(spread(v.float(), todo, batch))  # to the CPU once, at the end
                run.value = value.detach()
                if stopped := _first(p.observe(run, run.value, acts, todo) for p in policies):
                    break
                opt.zero_grad(set_to_none=True)
                if uses_gradient:
                    loss.backward()
                if scores_inputs:  # scores candidates exactly
                    opt.step(lambda x_eval, items=None: _score(capture, objective, regularizers, x_eval, items, batch))
                else:
                    opt.step()
                param.after_step()
                run.step = step
                if stopped := _first(p.after_step(run) for p in policies):
                    break
            loop_seconds = time.perf_counter() - loop_start
            final, values = result_of(param).detach(), None  # without training-only randomness (Transparent)
            wants = [p.final_values for p in policies if p.final_values is not None]
            if not checked or True in wants or not wants:
                with torch.no_grad():
                    acts = capture.forward(final, batch)
                    checked = checked or _check(objective, regularizers, acts)  # a run of 0 steps
                    values = objective(acts).detach()
                    if any([p.finish(run, values) for p in policies]):  # e.g. items back to a better step
                        final = result_of(param).detach()
                        values = objective(capture.forward(final, batch)).detach()
                values = values.cpu()
        finally:
            for p in policies:
                p.close(run)
    return Result(input=final.to("cpu", copy=True), values=values,
                  history={k: torch.stack(v).cpu() for k, v in history.items()}, snapshots=run.snapshots,
                  seed=seed, steps=run.step, seconds=time.perf_counter() - start, loop_seconds=loop_seconds,
                  stopped=stopped, **run.fields)


def _first(reasons) -> str | None:
    """The first stop reason among the policies' answers (every policy is asked)."""
    return next((r for r in list(reasons) if r), None)


def _check(objective, regularizers, acts) -> bool:
    """Validate the objective and regularizers against real activations (clear errors, not index errors)."""
    objective.check(acts)
    for r in regularizers:
        r.check(acts)
    return True


@torch.no_grad()
def _score(capture: Capture, objective, regularizers, x: torch.Tensor, items: torch.Tensor | None = None,
           batch: int | None = None) -> torch.Tensor:
    """Objective minus penalties ``(N,)`` for the N rows of ``x`` (for ``scores_inputs`` optimizers);
    ``items``: ``(N,)`` the batch position each row stands for (per-item objectives pick their
    constants with ``acts.rows``), ``None``: rows are not tied to items."""
    acts = capture.forward(x)
    if items is not None:
        acts = acts.of(torch.as_tensor(items), batch)
    value = objective(acts)
    for r in regularizers:
        if (p := r.penalty(x, acts)) is not None:
            value = value - p
    return value

