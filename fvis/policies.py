"""Step policies: small objects that :func:`fvis.optimize` consults around each step.

The core loop does what every use needs (input, transforms, forward, loss, backward, optimizer
step, non-finite roll-back); everything else is a policy passed in ``policies=[...]``:

* :class:`PerItem` — per-item control for batch-first parameters: ``stop`` (an item that holds
  is frozen), ``keep_best`` (each item returns at its best step), ``skip_done`` (finished items
  leave the forward pass).
* :class:`Snapshots` — copies of the input at given steps (``result.snapshots``).
* :class:`ProgressBar` — a tqdm bar with the mean objective (``progress=True`` adds one).
* :class:`TimeLimit` — no step starts that would end past the limit.
* :class:`CaptureOptions` — input layout and truncation of the forward pass.
* :class:`SkipFinalValues` — no closing measurement (for callers that score the input themselves).

A policy overrides any of the hooks of :class:`Policy`; a hook that returns a string stops the
run with that reason (``result.stopped``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from .errors import FvisError
from .progress import progress_bar


@dataclass
class Run:
    """What policies see of a run in progress (the engine fills it)."""

    param: torch.nn.Module
    batch: int
    steps: int
    step: int = 0  # steps completed
    value: torch.Tensor | None = None  # this step's objective per forwarded item
    loop_start: float = 0.0
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # extra Result fields set by policies


class Policy:
    """Base class: every hook is optional. ``order``: policies run in ascending order (stable)."""

    order = 10
    capture: dict = {}  # keyword arguments for fvis.hooks.Capture (truncate, channels_last)
    final_values: bool | None = None  # False: no closing measurement; True: one is needed

    def start(self, run: Run) -> None:
        """Before the first step."""

    def forward_items(self, run: Run) -> torch.Tensor | None:
        """Positions of the items to forward this step, or ``None`` for all."""
        return None

    def observe(self, run: Run, values: torch.Tensor, acts, todo: torch.Tensor | None) -> str | None:
        """After a finite loss, before the update: this step's per-item ``values`` (of the
        forwarded items, at ``todo``)."""
        return None

    def after_step(self, run: Run) -> str | None:
        """After the optimizer step and ``param.after_step()``; ``run.step`` is the step just done."""
        return None

    def finish(self, run: Run, values: torch.Tensor) -> bool:
        """Given the final values, may change the parameters; True: measure again."""
        return False

    def close(self, run: Run) -> None:
        """At the end, also on errors."""


def spread(values: torch.Tensor, todo: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Per-item values of the forwarded items spread over the whole batch (NaN for skipped ones)."""
    if todo is None:
        return values
    out = torch.full((batch, *values.shape[1:]), float("nan"), dtype=values.dtype, device=values.device)
    out[todo.to(values.device)] = values
    return out


class PerItem(Policy):
    """Per-item control (``param``'s tensors must be batch-first).

    ``stop(acts, values) -> (B,) bool`` freezes each item at the first step where it holds (it
    stops changing; the run ends, ``stopped == "done"``, when all are done); ``keep_best``
    returns each item at the step with its highest objective (as measured during the run,
    through the transforms; the final iterate included); ``skip_done`` forwards only the
    unfinished items (objectives and regularizers then see ``acts.items``; their history entries
    for skipped items are NaN). With ``stop``, ``result.done`` / ``result.done_step`` say which
    items finished and when.
    """

    order = 0  # finished items are put back before snapshots and progress look at the input

    def __init__(self, stop: Callable | None = None, keep_best: bool = False, skip_done: bool = False):
        self.stop, self.keep_best, self.skip_done = stop, keep_best, skip_done
        self.final_values = True if keep_best else None

    def start(self, run: Run) -> None:
        batch = run.batch
        self.params = [p for p in run.param.parameters() if p.requires_grad]
        bad = [tuple(p.shape) for p in self.params if p.dim() == 0 or p.shape[0] != batch]
        if bad:
            raise FvisError(f"stop/keep_best need batch-first parameters of batch {batch}; got shapes {bad}")
        self.saved = [p.detach().clone() for p in self.params]
        device = self.params[0].device
        self.best = torch.full((batch,), -torch.inf, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.finished_at = torch.full((batch,), -1, dtype=torch.long, device=device)

    def forward_items(self, run: Run) -> torch.Tensor | None:
        """Positions of the unfinished items, or ``None`` while none has finished (or without skip_done)."""
        return (~self.done).nonzero().flatten() if self.skip_done and self.done.any() else None

    def observe(self, run: Run, values: torch.Tensor, acts, todo: torch.Tensor | None = None) -> str | None:
        newly = torch.zeros_like(self.done)
        if self.stop is not None:
            with torch.no_grad():
                hit = torch.as_tensor(self.stop(acts, values), device=self.done.device).bool()
            if hit.shape != (values.shape[0],):
                raise FvisError(f"stop() must return one bool per item ({values.shape[0]},), got {tuple(hit.shape)}")
            newly[slice(None) if todo is None else todo] = hit
            newly &= ~self.done
        values = spread(values, todo, len(self.done))  # NaN for skipped items: never "better"
        save = newly | ((values > self.best) & ~self.done if self.keep_best else newly)
        if save.any():
            for p, s in zip(self.params, self.saved):
                s[save] = p.detach()[save]
            self.best = torch.where(save, values.to(self.best.dtype), self.best)
        self.done |= newly
        self.finished_at[newly] = run.step + 1
        return "done" if bool(self.done.all()) else None

    @torch.no_grad()
    def after_step(self, run: Run) -> None:
        if self.done.any():
            for p, s in zip(self.params, self.saved):
                p[self.done] = s[self.done]

    @torch.no_grad()
    def finish(self, run: Run, values: torch.Tensor) -> bool:
        """Finished items stay frozen; with keep_best, the others go back to their best step
        unless the final iterate (objective ``values``) is at least as good. True if any went back."""
        back = ~self.done & (self.best > values.to(self.best.dtype)) if self.keep_best else torch.zeros_like(self.done)
        for p, s in zip(self.params, self.saved):
            p[back] = s[back]
        return bool(back.any())

    def close(self, run: Run) -> None:
        if self.stop is not None and hasattr(self, "done"):
            steps = torch.full_like(self.finished_at, run.step)
            run.fields.update(done=self.done.cpu(), done_step=torch.where(self.done, self.finished_at, steps).cpu())


def result_of(param) -> torch.Tensor:
    """What a run keeps of ``param``: ``param.result()`` where it has one (a parameterization with
    training-only randomness, e.g. :class:`fvis.params.Transparent`), else ``param()``."""
    result = getattr(param, "result", None)
    return result() if callable(result) else param()


class Snapshots(Policy):
    """``result.snapshots[step]``: a CPU copy of the input (:func:`result_of`) after each of ``steps``."""

    def __init__(self, steps: Iterable[int]):
        self.steps = set(steps)

    def after_step(self, run: Run) -> None:
        if run.step in self.steps:
            run.snapshots[run.step] = result_of(run.param).detach().to("cpu", copy=True)  # never a view of the parameter


class ProgressBar(Policy):
    """A tqdm bar over the steps with the mean objective; it counts completed steps only."""

    order = 20

    def __init__(self, desc: str = "fvis", postfix: Callable[[Run], dict] | None = None, disable: bool | None = None):
        self.desc, self.postfix = desc, postfix or (lambda run: {"objective": f"{run.value.mean().item():.4g}"})
        self.disable = disable  # None: drawn on a terminal only (no cursor codes in logs)
        self.bar = None

    def start(self, run: Run) -> None:
        self.bar = progress_bar(total=run.steps, desc=self.desc, unit="step", disable=self.disable)

    def after_step(self, run: Run) -> None:
        if self.bar is not None and not self.bar.disable:  # no forced refresh, no device sync when hidden
            self.bar.update(1)
            self.bar.set_postfix(self.postfix(run), refresh=False)

    def close(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()


class TimeLimit(Policy):
    """Stop (``stopped == "time"``) rather than start a step that, at the mean step time so far,
    would end more than ``seconds`` after ``since`` (a ``clock()`` reading; default: when the
    first step started)."""

    def __init__(self, seconds: float, since: float | None = None, clock: Callable[[], float] = time.perf_counter):
        if not seconds > 0:
            raise FvisError(f"time limit must be > 0 seconds, got {seconds}")
        self.seconds, self.since, self.clock = float(seconds), since, clock

    def start(self, run: Run) -> None:
        self.t0 = self.clock()
        self.origin = self.t0 if self.since is None else self.since

    def after_step(self, run: Run) -> str | None:
        now = self.clock()
        per_step = (now - self.t0) / max(run.step, 1)
        return "time" if now - self.origin + per_step > self.seconds else None


class CaptureOptions(Policy):
    """How the model is run: ``channels_last`` input layout (``None``: channels-last on the CPU
    when the model takes it; see :class:`fvis.hooks.Capture`); ``truncate`` the forward after the
    deepest needed layer; ``precision`` ``"fp32"`` or ``"bf16"`` (autocast) and ``compile``
    (``torch.compile`` of the model's forward and backward), both for GPU runs (:mod:`fvis.execution`);
    ``fold``: run a checked copy of an image model with BatchNorm and padding folded into its
    convolutions (:func:`fvis.hooks.inference_copy`): about 1.4x faster steps on EfficientNet-Lite0
    on the CPU, the same images up to float rounding but not the same bytes for a seed (off by default)."""

    def __init__(self, channels_last: bool | None = None, truncate: bool = True, precision: str = "fp32",
                 compile: bool = False, fold: bool = False):
        self.capture = {"channels_last": channels_last, "truncate": truncate, "precision": precision,
                        "compile": compile, "fold": fold}


class SkipFinalValues(Policy):
    """No closing forward pass to measure ``result.values`` (then ``None``), for callers that
    score the input themselves (``PerItem(keep_best=True)`` still measures)."""

    final_values = False
