"""Class prototypes: inputs a model classifies as a class *and* whose internal activations look
like those of natural images, so that other models recognize them too (Leap Labs' prototype
generation). All classes x ``per_class`` render in one batched :func:`fvis.optimize` run:

    objective   = class logit of item i's class  (+ diversity within a class when per_class > 1)
    regularizers = transformation robustness, frequency penalty, activation matching (BN or images)
    start       = the "equidistant" input (all classes equally likely) or a random one
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

import objectives as obj
import regularizers as reg

from .classes import resolve_class
from .engine import optimize
from .errors import FvisError
from .hooks import Capture, frozen
from .io import contact_sheet, save_image, versions, write_json
from .models import ImageModel
from .param import FourierImage, MacoImage, PixelImage, natural_magnitude
from .render import slug

PARAMS = ("fourier", "maco", "pixel")


@dataclass
class Prototype:
    """One generated class image. ``image``: ``(C, H, W)`` in [0, 1]; ``metrics``: clean_p,
    robustness, transfer, hfer (see :mod:`fvis.evaluate`); ``history``: per-step values of each
    loss term for this item; ``seconds``: the batch's generation time (no evaluation) / items."""

    cls: int
    name: str
    k: int
    per_class: int
    image: torch.Tensor
    objective: float
    seconds: float
    settings: dict
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return prototype_stem(self.cls, self.name, self.k, self.per_class)


def prototype_stem(cls: int, name: str, k: int = 0, per_class: int = 1) -> str:
    """``94_hummingbird``, or ``94_hummingbird_2`` when there are several per class."""
    return f"{cls}_{slug(name)}" + (f"_{k}" if per_class > 1 else "")


def matching_regularizer(model: ImageModel, match: str, classes: Sequence[int] = (), layers="per-block",
                         cache=None, progress: bool = False, class_weight: float = 1.0):
    """``"bn"`` (BatchNorm running statistics), ``"images:DIR"`` (statistics of reference
    images at the same layers, cached; a class-mean term for classes that have images in DIR
    named ``<class>_*``) or ``"none"``: an :class:`regularizers.ActivationMatching` or ``None``.
    ``layers``: layer names, or ``"per-block"`` (one BN per block, default) / ``"all"`` BN layers
    (reference images on a model without BatchNorm: 8 evenly spaced 4-D layers)."""
    if match == "none":
        return None
    if match == "bn":
        return reg.ActivationMatching(reg.batchnorm_stats(model, layers))
    if match.startswith("images:"):
        from .evaluate import path_layers
        from .reference import reference_stats

        names = list(layers) if not isinstance(layers, str) else reg.batchnorm_layers(model, layers) or path_layers(model)
        ref = reference_stats(model, match.split(":", 1)[1], names, cache=cache, progress=progress)
        rows = {int(c): i for i, c in enumerate(ref["classes"].tolist())}
        class_rows = [rows.get(int(c), -1) for c in classes]
        last = names[-1]  # class means at the deepest matched layer
        use_class = any(r >= 0 for r in class_rows) and last in ref["class_means"]
        return reg.ActivationMatching(ref["stats"], class_means={last: ref["class_means"][last]} if use_class else None,
                                      classes=class_rows if use_class else None, class_weight=class_weight)
    raise FvisError(f"unknown --match {match!r}: use bn, images:DIR or none")


def balance(model: torch.nn.Module, objective, param: torch.nn.Module, penalty: reg.Regularizer,
            ratio: float = 1.0) -> float:
    """Set ``penalty.weight`` so that, at the starting input, the penalty's gradient norm is
    ``ratio`` times the objective's (faccent's auto-balancing; no per-model magic numbers).
    Returns the weight."""
    with frozen(model), Capture(model, set(objective.layers) | set(penalty.layers), truncate=False) as cap:
        x = param()
        acts = cap.forward(x)
        grads = []
        for term in (objective(acts).sum(), penalty.penalty(x, acts).sum() / penalty.weight):
            g = torch.autograd.grad(term, [p for p in param.parameters() if p.requires_grad], retain_graph=True)
            grads.append(torch.sqrt(sum(gi.pow(2).sum() for gi in g)))
    g_obj, g_pen = (float(g) for g in grads)
    penalty.weight = ratio * g_obj / max(g_pen, 1e-12)
    return penalty.weight


def make_param(kind: str, size, batch: int, channels: int, seed: int, decay_power: float = 1.0,
               magnitude: torch.Tensor | None = None):
    if kind == "fourier":
        return FourierImage(size, batch=batch, channels=channels, decay_power=decay_power, seed=seed)
    if kind == "maco":
        return MacoImage(size, batch=batch, magnitude=magnitude, seed=seed)
    if kind == "pixel":
        return PixelImage(size, batch=batch, channels=channels, seed=seed)
    raise FvisError(f"unknown parameterization {kind!r}: choose from {', '.join(PARAMS)}")


def equidistant_start(model: ImageModel, base: torch.nn.Module, steps: int = 64, lr: float = 0.05,
                      seed: int = 0) -> float:
    """Optimize the batch-1 parameterization ``base`` in place towards the "equidistant baseline"
    (every class equally likely). Returns its largest class probability (1/K would be perfect)."""
    result = optimize(model, obj.equidistant(), base, [reg.TransformRobustness()], steps=steps, lr=lr,
                      seed=seed, progress=False)
    with torch.no_grad():
        return model(result.input.to(next(model.parameters()).device)).softmax(1).max().item()


def spread(base: torch.nn.Module, param: torch.nn.Module, seed: int = 0, noise: float = 0.01) -> None:
    """Copy a batch-1 parameterization into every item of ``param``, plus seeded noise of
    ``noise`` x the parameter's spread, so items start alike but not identical."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (_, b), p in zip(base.named_parameters(), param.parameters()):
            p.copy_(b.expand_as(p) + noise * b.std() * torch.randn(p.shape, generator=g).to(p))


def make_prototypes(model: ImageModel, classes: Sequence[int | str], *, per_class: int = 1, steps: int = 512,
                    match: str = "bn", param: str = "fourier", init: str = "equidistant", size=None, lr: float = 0.05,
                    seed: int = 0, transforms: bool = True, tv: float = 0.0, high_freq: float = 10.0,
                    match_ratio: float = 1.0, match_weight: float | None = None, match_layers="per-block",
                    class_weight: float = 1.0,
                    diversity: float = 0.0, decay_power: float = 1.0, log_prob: bool = False,
                    reference: str | Path | None = None, cache=None, evaluators: Sequence[ImageModel] = (),
                    heldout: int = 32, progress: bool = True) -> list[Prototype]:
    """Prototypes for ``classes`` (indices or class names), ``per_class`` each, in one batch.

    ``match``: ``"bn"`` | ``"images:DIR"`` | ``"none"`` (activation-distribution matching source);
    its weight is ``match_weight`` or, by default, balanced so its starting gradient norm is
    ``match_ratio`` x the objective's; ``match_layers``: ``"per-block"`` | ``"all"`` | names of BN
    layers. ``param``: ``fourier`` | ``maco`` | ``pixel``; ``maco`` uses
    the amplitude spectrum of ``reference`` images (a folder) or the shipped one. ``init``:
    ``equidistant`` | ``random``. ``tv`` / ``high_freq``: frequency penalty weights (total
    variation; share of spectral energy above 0.25 cycles/px). ``diversity``: weight of a
    within-class diversity term at the deepest matched layer (``per_class > 1``). Each result is
    scored with :func:`fvis.evaluate.evaluate_images` (``heldout`` transforms; ``evaluators``)."""
    from .evaluate import evaluate_images

    start = time.perf_counter()
    names = model.class_names
    idx = [resolve_class(c, names) if names else int(c) for c in classes]
    if len(set(idx)) < len(idx):  # "94,hummingbird" names one class twice: made once, not two colliding files
        repeated = sorted({c for c in idx if idx.count(c) > 1})
        warnings.warn(f"fvis: class(es) {', '.join(map(str, repeated))} given more than once; made once "
                      f"(use --per-class for several prototypes of a class)")
        idx = list(dict.fromkeys(idx))
    if per_class < 1:
        raise FvisError(f"per_class must be >= 1, got {per_class}")
    if init not in ("equidistant", "random"):
        raise FvisError(f"unknown init {init!r}: use equidistant or random")
    items = [(c, k) for c in idx for k in range(per_class)]
    item_classes = [c for c, _ in items]
    size = size or model.input_size
    device = next(model.parameters()).device
    magnitude = None
    if param == "maco" and reference is not None:
        from .datasets import ImageFolder
        magnitude = natural_magnitude(torch.cat([x for _, x in ImageFolder(reference, size)]), size)
    image = make_param(param, size, len(items), model.channels, seed, decay_power, magnitude).to(device)
    baseline_p = None
    if init == "equidistant":
        base = make_param(param, size, 1, model.channels, seed, decay_power, magnitude).to(device)
        baseline_p = equidistant_start(model, base, steps=max(8, steps // 8), lr=lr, seed=seed)
        spread(base, image, seed)

    objective = obj.class_logits(item_classes, log_prob=log_prob)
    regs = [reg.TransformRobustness()] if transforms else []
    if tv or high_freq:
        regs.append(reg.FrequencyPenalty(tv=tv, high_freq=high_freq))
    matching = matching_regularizer(model, match, item_classes, match_layers, cache, progress, class_weight)
    if matching is not None:
        matching = matching.to(device)
        if match_weight is None:
            balance(model, objective, image, matching, match_ratio)
        else:
            matching.weight = float(match_weight)
        regs.append(matching)
    if diversity and per_class > 1:
        from .evaluate import path_layers
        layer = matching.layers[-1] if matching is not None else path_layers(model)[-1]
        objective = objective + diversity * obj.diversity(layer, groups=item_classes)

    result = optimize(model, objective, image, regs, steps=steps, lr=lr, seed=seed, progress=progress)
    seconds = time.perf_counter() - start  # generation only (set-up, balancing, start, steps)
    scores = evaluate_images(model, result.input, item_classes, evaluators, heldout, seed)
    settings = {"model": model.name, "steps": steps, "match": match, "param": param, "init": init,
                "size": list(size) if not isinstance(size, int) else [size, size], "lr": lr, "seed": seed,
                "transforms": transforms, "tv": tv, "high_freq": high_freq, "match_ratio": match_ratio,
                "match_weight": None if matching is None else round(matching.weight, 6), "class_weight": class_weight,
                "match_layers": None if matching is None else list(matching.layers),
                "diversity": diversity, "decay_power": decay_power, "log_prob": log_prob,
                "reference": None if reference is None else str(reference), "batch": len(items),
                "equidistant_max_p": baseline_p, "evaluators": [e.name for e in evaluators],
                "stopped": result.stopped}
    out = []
    for i, (c, k) in enumerate(items):
        out.append(Prototype(
            cls=c, name=names[c] if names else str(c), k=k, per_class=per_class, image=result.input[i],
            objective=float(result.values[i]), seconds=seconds / len(items), settings=settings,
            metrics={m: v for m, v in scores[i].items()},
            history={n: [round(float(v), 5) for v in h[:, i]] for n, h in result.history.items() if h.dim() == 2}))
    return out


def save_prototype(p: Prototype, out: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.png`` then ``<stem>.json`` (both atomic: a finished item is one whose JSON exists)."""
    out = Path(out)
    png = save_image(p.image, out / f"{p.stem}.png")
    meta = {"class": p.cls, "name": p.name, "k": p.k, "kind": "prototype", "image": png.name,
            "objective": p.objective, "metrics": p.metrics, "seconds": round(p.seconds, 3),
            "settings": p.settings, "history": p.history, "versions": versions()}
    return png, write_json(meta, out / f"{p.stem}.json")


def save_prototypes(protos: Sequence[Prototype], out: str | Path) -> dict:
    """Every prototype, ``index.json`` (settings, metrics and files of all) and ``contact_sheet.png``."""
    out = Path(out)
    entries = []
    for p in protos:
        png, js = save_prototype(p, out)
        entries.append({"class": p.cls, "name": p.name, "k": p.k, "image": png.name, "json": js.name, **p.metrics})
    labels = [f"{p.cls} {p.name}\np={p.metrics.get('clean_p', 0):.2f}"
              + (f" transfer={p.metrics['transfer']:.2f}" if p.metrics.get("transfer") is not None else "")
              for p in protos]
    contact_sheet([p.image for p in protos], labels, out / "contact_sheet.png")
    index = {"items": entries, "settings": protos[0].settings if protos else {}}
    write_json(index, out / "index.json")
    return index
