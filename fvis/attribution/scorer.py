"""What every attribution method shares: the :class:`Attribution` result and the :class:`Scorer`
(``f(x)`` per row: a target class's logit or an objective's value, through
:class:`fvis.hooks.Capture`), plus input checks. Used by :mod:`fvis.explain` and :mod:`fvis.isolate`."""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from objectives import Objective

from ..classes import resolve_class
from ..display import colorize
from ..errors import FvisError
from ..hooks import OUTPUT, Capture, frozen
from ..inline import Displayable, Panel, fmt
from ..progress import progress_bar


@dataclass
class Attribution(Displayable):
    """What an attribution method returns (all tensors on the CPU).

    ``raw``: the attribution itself, ``(B, C, H, W)`` (per input value) or ``(B, 1, H, W)``
    (per pixel: Grad-CAM upsampled, occlusion, mask). ``heatmap``: ``(B, H, W)`` in [0, 1].
    ``target``: class index per item (``-1`` for an objective). ``score``: f(x) per item
    (target logit or objective value). ``info``: method specifics (completeness gap, layer, ...).
    """

    method: str
    raw: torch.Tensor
    heatmap: torch.Tensor
    target: torch.Tensor
    score: torch.Tensor
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0

    def _panel(self) -> Panel:
        """The heatmaps in the inferno colour map (``fvis.show((image, attribution))`` puts the input
        beside them; :func:`fvis.display.overlay` draws one over the other)."""
        labels = [f"{self.method}, target {int(t)}\nscore {fmt(float(s))}" for t, s in zip(self.target, self.score)]
        return Panel(f"attribution {self.method}", [colorize(h) for h in self.heatmap], labels,
                     {"seconds": self.seconds})


class Scorer:
    """``f(x)`` per row: the logit of each row's target class, or an objective's value.

    Runs through :class:`fvis.hooks.Capture` (only the needed layers hooked; truncated forward
    when the score does not need the model output). ``extra`` layers are captured as well.
    """

    def __init__(self, model: nn.Module, target, extra: Sequence[str] = ()):
        self.model = model
        self.objective = target if isinstance(target, Objective) else None
        self.target = target
        layers = set(self.objective.layers) if self.objective is not None else {OUTPUT}
        self.capture = Capture(model, layers | set(extra))
        self.classes: torch.Tensor | None = None
        self.probability: torch.Tensor | None = None  # softmax p of each item's class (class targets)
        self.dry = None  # activations of the dry forward

    def __enter__(self) -> "Scorer":
        """Freezes the model (eval, no weight gradients) and hooks its layers, both undone on exit."""
        self._stack = ExitStack()
        with self._stack as stack:
            stack.enter_context(frozen(self.model))
            stack.enter_context(self.capture)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def setup(self, x: torch.Tensor) -> torch.Tensor:
        """Dry forward on ``x``: validates layers/targets, resolves classes, plans truncation; ``f(x)``."""
        acts = self.dry = self.capture.plan(x)
        if self.objective is not None:
            self.objective.check(acts)
            self.classes = torch.full((x.shape[0],), -1, dtype=torch.long)
            return self.objective(acts).detach().float().cpu()
        out = acts[OUTPUT]
        if out.dim() != 2:
            raise FvisError(f"class attribution needs (B, classes) model output, got {tuple(out.shape)}; "
                            f"pass an objective instead")
        self.classes = resolve_targets(self.target, out, getattr(self.model, "class_names", None))
        self.probability = out.float().softmax(1).gather(1, self.classes.to(out.device)[:, None])[:, 0].cpu()
        return out.gather(1, self.classes.to(out.device)[:, None])[:, 0].detach().float().cpu()

    def __call__(self, x: torch.Tensor, items: torch.Tensor):
        """Scores ``(n,)`` of rows ``x`` ``(n, C, H, W)``; ``items`` ``(n,)`` says which batch item
        (hence which class) each row belongs to. Also returns the activations."""
        acts = self.capture.forward(x)
        if self.objective is not None:
            return self.objective(acts), acts
        out = acts[OUTPUT]
        return out.gather(1, self.classes[items].to(out.device)[:, None])[:, 0], acts


def resolve_targets(target, out: torch.Tensor, names) -> torch.Tensor:
    b, k = out.shape
    if target is None:
        return out.argmax(1).cpu()
    if isinstance(target, torch.Tensor):
        target = target.tolist() if target.dim() else int(target)
    if isinstance(target, (int, str)):
        return torch.full((b,), resolve_class(target, names, k), dtype=torch.long)
    target = list(target)
    if len(target) != b:
        raise FvisError(f"{len(target)} targets for a batch of {b} images")
    return torch.tensor([resolve_class(t, names, k) for t in target], dtype=torch.long)


def as_batch(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` images as a float batch on the model's device, checked."""
    if not isinstance(x, torch.Tensor):
        raise FvisError(f"expected an image tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise FvisError(f"expected images (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    channels = getattr(model, "channels", x.shape[1])
    if x.shape[1] != channels:
        raise FvisError(f"the model takes {channels}-channel images, got {x.shape[1]} channels")
    device = next(iter(model.parameters()), torch.empty(0)).device
    return x.detach().float().to(device)


def plain_settings(**kw) -> dict:
    """Settings as JSON-ready values (anything else becomes its ``str``)."""
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else str(v)) for k, v in kw.items()}


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def gradients(scorer: Scorer, rows, n: int, items: torch.Tensor, batch_size: int, progress: bool, desc: str):
    """Yield ``(slice, gradient, scores)`` per chunk: the gradient of each row's score w.r.t. the
    row. ``rows(slice)`` builds the rows ``(n, C, H, W)`` of a chunk (so long paths never sit
    in memory at once); ``items[i]`` is the batch item (hence the class) of row ``i``."""
    parts = list(chunks(n, batch_size))
    for part in progress_bar(parts, show=progress and len(parts) >= 2, desc=desc, unit="batch"):
        xi = rows(part).detach().clone().requires_grad_(True)
        s, _ = scorer(xi, items[part])
        (g,) = torch.autograd.grad(s.sum(), xi)
        yield part, g, s.detach().float().cpu()


def plain_gradient(scorer: Scorer, x: torch.Tensor, batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    grads = torch.empty_like(x)
    for part, g, _ in gradients(scorer, lambda p: x[p], x.shape[0], torch.arange(x.shape[0]), batch_size,
                                 progress, desc):
        grads[part] = g
    return grads


def finish(method, raw, heatmap, scorer, score, t0, settings, **info) -> Attribution:
    if scorer.probability is not None:
        info = {"probability": scorer.probability, **info}
    return Attribution(method, raw.detach().float().cpu(), heatmap.detach().float().cpu(), scorer.classes.clone(),
                       score, settings, info, time.perf_counter() - t0)
