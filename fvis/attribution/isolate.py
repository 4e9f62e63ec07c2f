"""Feature isolation: the smallest smooth part of an input that keeps a class (or objective).

A mask ``m`` in [0, 1] (low resolution, upsampled bilinearly) mixes the input with a baseline,
``x_m = m * x + (1 - m) * baseline``, and is optimized by :func:`fvis.optimize` to keep the
score while covering as little as possible (Fong & Vedaldi 2017's preservation game):

    maximize  min(1, (f(x_m) - f(baseline)) / (f(x) - f(baseline)))  -  area * mean(m)  -  smoothness * TV(m)

The first term is the fraction of the score kept (capped at 1, so the mask gains nothing by
*raising* the score with artefacts). Works on photos and on rendered prototypes; with several
classes (:func:`shared_features`) the minimum of their masks shows the parts they share.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from objectives import Objective
from regularizers import MaskArea, MaskSmoothness, TransformRobustness

from ..baselines import make_baseline
from ..display import normalize
from ..engine import Result, optimize
from ..hooks import OUTPUT
from ..inline import Displayable, Panel, fmt
from ..params.mask import MaskedInput
from .scorer import Attribution, Scorer, as_batch, plain_settings

STEPS = 100  # optimization steps of the mask by default


@dataclass
class Isolation(Displayable):
    """What :func:`isolate` returns (CPU tensors). ``mask`` ``(B, 1, H, W)``; ``kept``: fraction
    of the score kept by the masked input (uncapped); ``area``: mean mask value; ``score`` /
    ``baseline_score``: f(x), f(baseline); ``masked``: the masked inputs; ``result``: the engine's."""

    mask: torch.Tensor
    kept: torch.Tensor
    area: torch.Tensor
    target: torch.Tensor
    score: torch.Tensor
    baseline_score: torch.Tensor
    masked: torch.Tensor
    result: Result
    settings: dict = field(default_factory=dict)

    def _panel(self) -> Panel:
        """Per item: the mask (white = kept) and the masked input, with the share of the score kept."""
        images, labels = [], []
        for i in range(len(self.mask)):
            images += [self.mask[i].expand(3, -1, -1), self.masked[i]]
            labels += [f"mask, area {fmt(float(self.area[i]))}", f"target {int(self.target[i])}\nkept {fmt(float(self.kept[i]))}"]
        return Panel("feature isolation", images, labels, columns=2 * min(len(self.mask), 3))


def isolate(model: nn.Module, x: torch.Tensor, target=None, *, baseline="blur", steps: int = STEPS, lr: float = 0.1,
            area: float = 1.0, smoothness: float = 0.5, cell: int = 16, init: float = 0.9, transforms: bool = True,
            baseline_images: str | Path | None = None, seed: int = 0, progress: bool = True) -> Isolation:
    """Learn a mask per item of ``x`` ``(B, C, H, W)`` that keeps ``target`` (as in
    :mod:`fvis.attribution`: ``None`` = top-1 class, a class, one per item, or an objective) with
    as little of the input as possible; masked-out parts show ``baseline`` (``"blur"``,
    ``"mean"`` of ``baseline_images``, ``"noise"``, ``"black"``, ``"gray"``, a value or tensor).
    Runs on :func:`fvis.optimize` (Adam, ``lr`` on the mask logits) with
    :class:`regularizers.MaskArea` (weight ``area``) and :class:`regularizers.MaskSmoothness`
    (weight ``smoothness``); the mask has one cell per ``cell`` px and starts at ``init``.
    ``transforms``: score the masked input under the engine's random jitter/scale/rotation
    (:class:`regularizers.TransformRobustness`), so the mask cannot win with pixel-exact artefacts."""
    x = as_batch(x, model)
    b = x.shape[0]
    x0 = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    with Scorer(model, target) as scorer:
        full = scorer.setup(x)
        with torch.no_grad():
            base = scorer(x0, torch.arange(b))[0].float().cpu()
    classes = scorer.classes
    if isinstance(target, Objective):
        score = target
    else:
        index = classes.to(x.device)
        score = Objective(lambda acts: acts[OUTPUT].gather(1, index[:, None])[:, 0], [OUTPUT], "logit")
    span = full - base
    if (span <= 0).any():
        bad = [i for i in range(b) if span[i] <= 0]
        warnings.warn(f"fvis: the baseline scores at least as high as the input for item(s) {bad}; "
                      f"their masks are not meaningful (try another baseline)")
    span = torch.where(span.abs() > 1e-6, span.abs(), torch.ones_like(span))
    base_d, span_d = base.to(x.device), span.to(x.device)
    kept = Objective(lambda acts: ((score(acts) - base_d) / span_d).clamp(max=1.0), score.layers, "kept", score.check)
    param = MaskedInput(x, x0, cell, init)
    regs = [MaskArea(param, area), MaskSmoothness(param, smoothness)]
    if transforms:  # score the masked input under random jitter/scale/rotation: no pixel-exact artefacts
        regs.insert(0, TransformRobustness())
    result = optimize(model, kept, param, regs, steps=steps, lr=lr, seed=seed, progress=progress)
    with torch.no_grad(), Scorer(model, target if isinstance(target, Objective) else classes) as sc:
        sc.setup(x)
        masked = param().detach()
        final = sc(masked, torch.arange(b))[0].float().cpu()
        mask = param.mask().detach().cpu()
    settings = plain_settings(baseline=baseline if isinstance(baseline, (str, int, float)) else "tensor", steps=steps,
                         lr=lr, area=area, smoothness=smoothness, cell=cell, init=init, transforms=transforms, seed=seed,
                         baseline_images=str(baseline_images) if baseline_images else None)
    return Isolation(mask, (final - base) / span, mask.flatten(1).mean(1), classes.clone(), full, base,
                     masked.cpu(), result, settings)


def isolate_attribution(model: nn.Module, x: torch.Tensor, target=None, *, baseline="blur", steps: int = STEPS,
                        lr: float = 0.1, area: float = 1.0, smoothness: float = 0.5, cell: int = 16,
                        transforms: bool = True, baseline_images: str | Path | None = None, seed: int = 0,
                        progress: bool = True) -> Attribution:
    """:func:`isolate` as an :class:`fvis.attribution.Attribution` (method ``"mask"``): ``raw`` is the
    mask ``(B, 1, H, W)``, ``heatmap`` the mask divided by its maximum."""
    t0 = time.perf_counter()
    iso = isolate(model, x, target, baseline=baseline, steps=steps, lr=lr, area=area, smoothness=smoothness,
                  cell=cell, transforms=transforms, baseline_images=baseline_images, seed=seed, progress=progress)
    info = {"kept": iso.kept, "area": iso.area, "baseline_score": iso.baseline_score,
            "stopped": iso.result.stopped}
    return Attribution("mask", iso.mask, normalize(iso.mask[:, 0], None), iso.target, iso.score, iso.settings, info,
                       time.perf_counter() - t0)


def shared_features(model: nn.Module, image: torch.Tensor, classes, **options) -> tuple[Isolation, torch.Tensor]:
    """Isolate each of ``classes`` on the same ``image`` ``(C, H, W)`` in one batched run; also
    returns their shared part ``(1, H, W)``: the minimum of the masks (e.g. for two entangled
    classes of a prototype, the features both rely on)."""
    image = image[0] if image.dim() == 4 else image
    classes = list(classes)
    iso = isolate(model, image[None].expand(len(classes), -1, -1, -1), classes, **options)
    return iso, iso.mask.amin(0)
