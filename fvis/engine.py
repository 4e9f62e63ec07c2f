"""The one optimization loop behind every fvis use: render, prototypes, attacks, prompts."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .errors import FvisError
from .hooks import Capture, frozen

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "nadam": torch.optim.NAdam, "rmsprop": torch.optim.RMSprop}


@dataclass
class Result:
    """What :func:`optimize` returns.

    ``input``: final ``param()`` (detached, CPU). ``values``: final objective per item ``(B,)``,
    measured on ``input`` without transforms (``None`` with ``final_values=False``). ``history``: per-term, per-step, per-item values,
    ``name -> (steps, B)`` (``"objective"`` total, each objective leaf, each penalty; NaN where
    ``skip_done`` left a finished item out).
    ``snapshots``: ``step -> input`` at the requested thresholds. ``seconds``: total wall time;
    ``loop_seconds``: the steps alone.
    ``stopped``: ``None``, or why the run ended early (``"nan"``; ``"done"`` when ``stop`` held for
    every item). ``done``: ``(B,)`` items for which ``stop`` held; ``done_step``: ``(B,)`` the step
    at which each item finished (``steps`` for unfinished ones); both ``None`` without ``stop``.
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

    @property
    def seconds_per_step(self) -> float:
        """Wall time of the optimization steps alone (no set-up, no final evaluation)."""
        return self.loop_seconds / max(self.steps, 1)


def optimize(model: torch.nn.Module, objective, param: torch.nn.Module, regularizers: Sequence = (), *,
             steps: int = 256, lr: float = 0.05, optimizer: str | Callable = "adam", seed: int = 0,
             thresholds: Iterable[int] = (), progress: bool = True, truncate: bool = True,
             stop: Callable | None = None, keep_best: bool = False, skip_done: bool = False,
             final_values: bool = True, channels_last: bool | None = None) -> Result:
    """Maximize ``objective`` over the input produced by ``param``.

    Each step: ``x = param()``; regularizer transforms (seeded by ``seed``); forward through
    ``model`` with only the needed layers hooked (stopping after the deepest one);
    ``loss = sum over items of (-objective + penalties)``; optimizer step; ``param.after_step()``.
    A non-finite loss stops the run and keeps the last good input. The model's modes,
    ``requires_grad`` flags and hooks are restored afterwards, also on errors.

    Per-item control (``param``'s tensors must be batch-first): ``stop(acts, values) -> (B,) bool``
    freezes each item at the first step where it holds (it stops changing; the run ends when all
    are done); ``keep_best`` returns each item at the step with its highest objective value
    instead of the last (values as measured during the run, i.e. through the transforms).
    ``skip_done=True`` forwards only the unfinished items, so a step costs what the remaining
    items cost (objectives and regularizers then see ``acts.items``; their history entries for
    skipped items are NaN).

    Search optimizers: an optimizer with ``scores_inputs = True`` (e.g. :class:`fvis.invert.GCG`)
    is stepped as ``opt.step(score)``, where ``score(x) -> (N,)`` is the objective minus penalties
    of any N model inputs ``x`` (no gradients, no transforms; the run's hooks and truncation).
    The objective must not depend on batch positions (no ``.on()``) for this to make sense.

    ``final_values=False`` skips the closing forward pass that measures ``values`` (then
    ``None``) for callers that score the input themselves; ``keep_best`` still needs it.
    ``channels_last``: input layout for image models (``None``: channels-last on the CPU when the
    model takes it; see :class:`fvis.hooks.Capture`).
    """
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(optimizer, param.parameters(), lr)
    names = _unique_names(regularizers)
    layers = set(objective.layers).union(*(r.layers for r in regularizers))
    thresholds = set(thresholds)
    history: dict[str, list] = {}
    snapshots: dict[int, torch.Tensor] = {}
    stopped, done = None, 0
    start = time.perf_counter()
    with frozen(model), Capture(model, layers, truncate=truncate, channels_last=channels_last) as capture:
        with torch.no_grad():  # dry run on one transformed item (own generator: the run's draws stay as seeded)
            x_in, dry_generator = param(), torch.Generator().manual_seed(seed)
            batch = x_in.shape[0]
            x_in = x_in[:1] if isinstance(x_in, torch.Tensor) else x_in
            for r in regularizers:
                x_in = r.transform(x_in, dry_generator)
        capture.plan(x_in, 1 if isinstance(x_in, torch.Tensor) else batch)  # layers exist; counts calls for truncation
        checked = False  # objective / regularizer checks (indices, classes, shapes) not run yet
        last_good = {k: v.detach().clone() for k, v in param.state_dict().items()}
        items = _PerItem(param, batch, stop, keep_best) if stop or keep_best else None
        loop_start = time.perf_counter()
        bar = tqdm(range(1, steps + 1), disable=not progress, desc="fvis", unit="step", leave=False)
        for step in bar:
            todo = items.todo() if items is not None and skip_done else None  # None: every item
            x = param() if todo is None else param()[todo]
            x_in = x
            for r in regularizers:
                x_in = r.transform(x_in, generator)
            acts = capture.forward(x_in, batch if todo is None else len(todo), todo, batch)
            checked = checked or _check(objective, regularizers, acts)  # on the first step's activations
            trace: dict[str, torch.Tensor] = {}
            value = objective(acts, trace)
            penalties = {n: p for n, r in zip(names, regularizers) if (p := r.penalty(x, acts)) is not None}
            loss = -value.sum() + sum(p.sum() for p in penalties.values())
            if not torch.isfinite(loss):
                stopped = "nan"
                warnings.warn(f"fvis: non-finite loss at step {step}; stopping and keeping step {done}'s input")
                param.load_state_dict(last_good)
                break
            for k, v in param.state_dict().items():  # this input gave a finite loss: keep it
                last_good[k].copy_(v)
            for n, v in {"objective": value.detach(), **trace, **{k: p.detach() for k, p in penalties.items()}}.items():
                history.setdefault(n, []).append(_full(v.float(), todo, batch))  # to the CPU once, at the end
            if items is not None and items.observe(step, value.detach(), acts, todo):
                stopped = "done"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if getattr(opt, "scores_inputs", False):  # search optimizers (GCG) score candidates exactly
                opt.step(lambda x_eval: _score(capture, objective, regularizers, x_eval))
            else:
                opt.step()
            param.after_step()
            if items is not None:
                items.restore_done()
            done = step
            if step in thresholds:
                snapshots[step] = param().detach().to("cpu", copy=True)  # never a view of the parameter
            if progress:  # tqdm redraws at its own pace (no forced refresh, no device sync when hidden)
                bar.set_postfix(objective=f"{value.mean().item():.4g}", refresh=False)
        loop_seconds = time.perf_counter() - loop_start
        final, values = param().detach(), None
        if final_values or keep_best or not checked:
            with torch.no_grad():
                acts = capture.forward(final, batch)
                checked = checked or _check(objective, regularizers, acts)  # a run of 0 steps
                values = objective(acts).detach()
                if items is not None and items.finish(values):  # some items go back to an earlier, better step
                    final = param().detach()
                    values = objective(capture.forward(final, batch)).detach()
            values = values.cpu()
    return Result(input=final.to("cpu", copy=True), values=values,
                  history={k: torch.stack(v).cpu() for k, v in history.items()}, snapshots=snapshots,
                  seed=seed, steps=done, seconds=time.perf_counter() - start, loop_seconds=loop_seconds,
                  stopped=stopped, done=None if items is None or stop is None else items.done.cpu(),
                  done_step=None if items is None or stop is None else items.done_step(done).cpu())


def _full(values: torch.Tensor, todo: torch.Tensor | None, batch: int) -> torch.Tensor:
    """Per-item values of the forwarded items spread over the whole batch (NaN for skipped ones)."""
    if todo is None:
        return values
    out = torch.full((batch, *values.shape[1:]), float("nan"), dtype=values.dtype, device=values.device)
    out[todo.to(values.device)] = values
    return out


def _check(objective, regularizers, acts) -> bool:
    """Validate the objective and regularizers against real activations (clear errors, not index errors)."""
    objective.check(acts)
    for r in regularizers:
        r.check(acts)
    return True


class _PerItem:
    """Per-item bookkeeping for ``stop`` / ``keep_best``: saves each item's parameters when it
    improves or finishes, and puts finished items back after every optimizer step."""

    def __init__(self, param: torch.nn.Module, batch: int, stop, keep_best: bool):
        self.params = [p for p in param.parameters() if p.requires_grad]
        bad = [tuple(p.shape) for p in self.params if p.dim() == 0 or p.shape[0] != batch]
        if bad:
            raise FvisError(f"stop/keep_best need batch-first parameters of batch {batch}; got shapes {bad}")
        self.stop, self.keep_best = stop, keep_best
        self.saved = [p.detach().clone() for p in self.params]
        device = self.params[0].device
        self.best = torch.full((batch,), -torch.inf, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.finished_at = torch.full((batch,), -1, dtype=torch.long, device=device)

    def todo(self) -> torch.Tensor | None:
        """Positions of the unfinished items, or ``None`` while none has finished."""
        return (~self.done).nonzero().flatten() if self.done.any() else None

    def observe(self, step: int, values: torch.Tensor, acts, todo: torch.Tensor | None = None) -> bool:
        """Record this step's values of the forwarded items (all, or those at ``todo``) for the
        current parameters; True when every item is done."""
        newly = torch.zeros_like(self.done)
        if self.stop is not None:
            with torch.no_grad():
                hit = torch.as_tensor(self.stop(acts, values), device=self.done.device).bool()
            if hit.shape != (values.shape[0],):
                raise FvisError(f"stop() must return one bool per item ({values.shape[0]},), got {tuple(hit.shape)}")
            newly[slice(None) if todo is None else todo] = hit
            newly &= ~self.done
        values = _full(values, todo, len(self.done))  # NaN for skipped items: never "better"
        save = newly | ((values > self.best) & ~self.done if self.keep_best else newly)
        if save.any():
            for p, s in zip(self.params, self.saved):
                s[save] = p.detach()[save]
            self.best = torch.where(save, values.to(self.best.dtype), self.best)
        self.done |= newly
        self.finished_at[newly] = step
        return bool(self.done.all())

    @torch.no_grad()
    def restore_done(self) -> None:
        if self.done.any():
            for p, s in zip(self.params, self.saved):
                p[self.done] = s[self.done]

    @torch.no_grad()
    def finish(self, last: torch.Tensor) -> bool:
        """Finished items stay frozen; with keep_best, the others go back to their best step
        unless the final iterate (objective ``last``) is at least as good. True if any went back."""
        back = ~self.done & (self.best > last.to(self.best.dtype)) if self.keep_best else torch.zeros_like(self.done)
        for p, s in zip(self.params, self.saved):
            p[back] = s[back]
        return bool(back.any())

    def done_step(self, steps: int) -> torch.Tensor:
        return torch.where(self.done, self.finished_at, torch.full_like(self.finished_at, steps))


@torch.no_grad()
def _score(capture: Capture, objective, regularizers, x: torch.Tensor) -> torch.Tensor:
    """Objective minus penalties ``(N,)`` for the N rows of ``x`` (for ``scores_inputs`` optimizers)."""
    acts = capture.forward(x)
    value = objective(acts)
    for r in regularizers:
        if (p := r.penalty(x, acts)) is not None:
            value = value - p
    return value


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


def _unique_names(regularizers) -> list[str]:
    names, seen = [], {}
    for r in regularizers:
        seen[r.name] = seen.get(r.name, 0) + 1
        names.append(r.name if seen[r.name] == 1 else f"{r.name}.{seen[r.name]}")
    return names
