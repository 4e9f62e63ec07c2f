"""Class prototypes: what a model thinks a class looks like. All classes x ``per_class`` render
in one batched :func:`fvis.optimize` run (two with coarse-to-fine), set up by a named recipe
(:mod:`fvis.recipes`):

    objective    = class logit of item i's class  (+ diversity within a class when per_class > 1)
    regularizers = transformation robustness (+ flips), TV / L2 / frequency priors,
                   natural-activation matching (moments or sorted; BatchNorm, images or the seed photo),
                   the gradient kept to the most relevant channels (VITAL's relevant information flow)
    start        = random, the "equidistant" input (all classes equally likely) or a photo
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as F

import objectives as obj
import regularizers as reg

from .classes import resolve_class
from .datasets import ImageFolder
from .engine import optimize
from .errors import FvisError
from .evaluate import evaluate_images, path_layers
from .execution import check_precision
from .hooks import Capture, frozen, resolve_layers
from .inline import Displayable, Panel
from .io import contact_sheet, load_image, save_image, versions, write_json
from .models import ImageModel
from .naturalness import naturalness
from .optim import cosine
from .param import FourierImage, MacoImage, PixelImage, Upsampled, _size, natural_magnitude
from .params import Transparent
from .policies import CaptureOptions
from .recipes import DEFAULT, PARAMS, Recipe, get_recipe
from .reference import activation_quantiles, folder_quantiles, reference_stats
from .render import slug


@dataclass
class Prototype(Displayable):
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

    def _panel(self) -> Panel:
        metrics = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        figures = {"objective": self.objective, **metrics, "seconds": self.seconds}
        return Panel("prototype", [self.image], [f"{self.cls}: {self.name}"], figures, tile=224)


def prototype_stem(cls: int, name: str, k: int = 0, per_class: int = 1) -> str:
    """``94_hummingbird``, or ``94_hummingbird_2`` when there are several per class."""
    return f"{cls}_{slug(name)}" + (f"_{k}" if per_class > 1 else "")


def match_layer_names(model: ImageModel, r: Recipe) -> list[str]:
    """The layers ``r`` matches: its names, or ``per-block`` / ``all`` BatchNorm layers (8 evenly
    spaced 4-D layers on a model without BatchNorm, for image and seed sources)."""
    if not isinstance(r.match_layers, str):
        return list(r.match_layers)
    names = reg.batchnorm_layers(model, r.match_layers)
    if not names and r.match != "bn":
        names = path_layers(model)
    return names


def relevance_layer_names(model: ImageModel, r: Recipe) -> list[str]:
    """The layers where ``r`` filters the gradient by relevance: its names, the last of
    :func:`fvis.evaluate.path_layers` (``last``: the last block's output on EfficientNet), all of them (``blocks``)
    or the matched layers (``matched``)."""
    if not isinstance(r.relevance_layers, str):
        return list(r.relevance_layers)
    if r.relevance_layers == "matched":
        return match_layer_names(model, r)
    blocks = path_layers(model)
    return blocks[-1:] if r.relevance_layers == "last" else blocks


def natural_regularizer(model: ImageModel, r: Recipe, classes: Sequence[int] = (), seed_image=None,
                        cache=None, progress: bool = False):
    """The recipe's activation-matching regularizer (weight 1; see :func:`balance`), or ``None``.
    Moments: :class:`regularizers.ActivationMatching`; sorted: :class:`regularizers.SortedMatching`.
    Sources: ``bn`` (BatchNorm running statistics; sorted matching uses their normal quantiles),
    ``images:DIR`` (reference statistics, cached; a class-mean term for classes with images named
    ``<class>_*``), ``seed`` (the start image and its mirror image)."""
    if r.match == "none":
        return None
    layers = match_layer_names(model, r)
    weights = {layers[0]: r.first_layer} if r.first_layer != 1.0 else None
    if r.match == "bn":
        stats = reg.batchnorm_stats(model, layers)
        if r.match_stat == "sorted":
            scale = {l: s["std"] for l, s in stats.items()}
            return reg.SortedMatching(reg.gaussian_quantiles(stats, over=r.match_over), layer_weights=weights,
                                      over=r.match_over, scale=scale)
        return reg.ActivationMatching(stats, layer_weights=weights, over=r.match_over)
    if r.match == "seed":
        quantiles = activation_quantiles(model, torch.stack([seed_image, seed_image.flip(-1)]), layers)
    elif r.match_stat == "sorted":
        quantiles = folder_quantiles(model, r.match.split(":", 1)[1], layers)
    else:
        ref = reference_stats(model, r.match.split(":", 1)[1], layers, cache=cache, progress=progress)
        rows = {int(c): i for i, c in enumerate(ref["classes"].tolist())}
        class_rows = [rows.get(int(c), -1) for c in classes]
        last = layers[-1]  # class means at the deepest matched layer
        use_class = any(row >= 0 for row in class_rows) and last in ref["class_means"]
        return reg.ActivationMatching(ref["stats"], layer_weights=weights, over=r.match_over,
                                      class_means={last: ref["class_means"][last]} if use_class else None,
                                      classes=class_rows if use_class else None, class_weight=r.class_weight)
    if r.match_stat == "sorted":
        return reg.SortedMatching(quantiles, layer_weights=weights, over=r.match_over)
    stats = {l: {"mean": q.mean(1), "std": q.std(1)} for l, q in quantiles.items()}
    return reg.ActivationMatching(stats, layer_weights=weights, over=r.match_over)


def balance(model: torch.nn.Module, objective, param: torch.nn.Module, penalty: reg.Regularizer,
            ratio: float = 1.0) -> float:
    """Set ``penalty.weight`` so that, at the starting input, the penalty's gradient norm is
    ``ratio`` times the objective's (faccent's auto-balancing; no per-model magic numbers).
    Returns the weight."""
    penalty.weight = 1.0
    with frozen(model), Capture(model, set(objective.layers) | set(penalty.layers), truncate=False) as cap:
        x = param()
        acts = cap.forward(x)
        grads = []
        for term in (objective(acts).sum(), penalty.penalty(x, acts).sum()):
            g = torch.autograd.grad(term, [p for p in param.parameters() if p.requires_grad], retain_graph=True)
            grads.append(torch.sqrt(sum(gi.pow(2).sum() for gi in g)))
    g_obj, g_pen = (float(g) for g in grads)
    penalty.weight = ratio * g_obj / max(g_pen, 1e-12)
    return penalty.weight


def make_param(kind: str, size, batch: int, channels: int, seed: int, decay_power: float = 1.0,
               magnitude: torch.Tensor | None = None, init: torch.Tensor | None = None):
    """A parameterization by name (``fourier`` | ``maco`` | ``pixel``), random or from ``init``."""
    if kind == "fourier":
        return FourierImage(size, batch=batch, channels=channels, decay_power=decay_power, seed=seed, init=init)
    if kind == "pixel":
        return PixelImage(size, batch=batch, channels=channels, seed=seed, init=init)
    if kind == "maco" and init is None:
        return MacoImage(size, batch=batch, magnitude=magnitude, seed=seed)
    if kind == "maco":
        raise FvisError("the maco parameterization cannot start from an image (only its phase is free)")
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


def _stages(r: Recipe, size: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """``[(steps, image size)]``: coarse-to-fine spends ``r.coarse`` of the steps at half size."""
    coarse = round(r.steps * r.coarse)
    if not coarse or coarse == r.steps:
        return [(r.steps, size)]
    return [(coarse, (max(8, size[0] // 2), max(8, size[1] // 2))), (r.steps - coarse, size)]


def make_prototypes(model: ImageModel, classes: Sequence[int | str], *, recipe: str | Recipe = DEFAULT,
                    per_class: int = 1, size=None, seed: int = 0, reference: str | Path | None = None,
                    cache=None, evaluators: Sequence[ImageModel] = (), heldout: int = 32, progress: bool = True,
                    precision: str = "fp32", compile: bool = False, fold: bool = False,
                    **settings) -> list[Prototype]:
    """Prototypes for ``classes`` (indices or class names), ``per_class`` each, in one batch.

    ``recipe``: a name from :data:`fvis.recipes.RECIPES` or a :class:`fvis.recipes.Recipe`;
    ``settings`` override any of its fields (``steps=256``, ``match="bn"``, ...; unknown names are
    an error). ``reference``: images for the MACO amplitude spectrum. Each result is scored with
    :func:`fvis.evaluate.evaluate_images` (``heldout`` transforms; ``evaluators``). ``precision``,
    ``compile`` and ``fold``: how the model runs in the main optimization (:class:`fvis.policies.CaptureOptions`)."""
    r = get_recipe(recipe).replace(**settings)
    r.warn_without_effect(settings)
    check_precision(precision)
    if r.init == "image:":
        raise FvisError(f"recipe {r.name!r} starts from a photo: give init='image:PATH' (--init image:PATH)")
    if per_class < 1:
        raise FvisError(f"per_class must be >= 1, got {per_class}")
    relevance_layers = relevance_layer_names(model, r) if r.relevance else []
    resolve_layers(model, relevance_layers)  # an unknown name: one clear error before any long work
    start = time.perf_counter()
    names = model.class_names
    idx = [resolve_class(c, names) if names else int(c) for c in classes]
    if len(set(idx)) < len(idx):  # "94,hummingbird" names one class twice: made once, not two colliding files
        repeated = sorted({c for c in idx if idx.count(c) > 1})
        warnings.warn(f"fvis: class(es) {', '.join(map(str, repeated))} given more than once; made once "
                      f"(use --per-class for several prototypes of a class)")
        idx = list(dict.fromkeys(idx))
    items = [(c, k) for c in idx for k in range(per_class)]
    item_classes = [c for c, _ in items]
    size = _size(size or model.input_size)
    device = next(model.parameters()).device
    magnitude = None
    if r.param == "maco" and reference is not None:
        magnitude = natural_magnitude(torch.cat([x for _, x in ImageFolder(reference, size)]), size)
    seed_image = load_image(r.init.split(":", 1)[1], size, model.channels) if r.init.startswith("image:") else None

    objective = obj.class_logits(item_classes, score=r.score)
    regs = ([reg.TransformRobustness(jitter=r.jitter, scales=r.scales(), degrees=r.degrees, flip=r.flip)]
            if r.transforms else [])
    if r.blur:
        regs.append(reg.RandomBlur((min(0.1, r.blur), r.blur)))
    if r.colour_shift:
        regs.append(reg.ColourShift(r.colour_shift))
    if r.tv or r.high_freq or r.hf_energy:
        regs.append(reg.FrequencyPenalty(tv=r.tv, high_freq=r.high_freq, hf_energy=r.hf_energy))
    if r.l2:
        regs.append(reg.L2(r.l2))
    matching = natural_regularizer(model, r, item_classes, seed_image, cache, progress)
    if matching is not None:
        matching = matching.to(device)
        regs.append(matching)
    if r.relevance:
        regs.append(reg.RelevanceFilter(relevance_layers, keep=r.relevance))
    diversity = r.diversity if r.diversity is not None else (50.0 if per_class > 1 else 0.0)
    if diversity and per_class > 1:
        layer = matching.layers[-1] if matching is not None else path_layers(model)[-1]
        objective = objective + diversity * obj.diversity(layer, groups=item_classes)

    baseline_p, image, history, stopped = None, seed_image, {}, None
    for k, (steps, stage_size) in enumerate(_stages(r, size)):
        param = make_param(r.param, stage_size, len(items), model.channels, seed, r.decay_power, magnitude,
                           None if image is None else F.resize(image, list(stage_size), antialias=True).clamp(0, 1))
        stage_regs = regs
        if r.alpha:  # an opacity of its own (never with coarse-to-fine: checked by the recipe)
            opacity = make_param(r.param, stage_size, len(items), 1, seed + 1, r.decay_power)
            param = Transparent(param, opacity, r.backdrop, seed, r.backdrop_share)
            stage_regs = [*regs, reg.MaskArea(param, r.alpha, r.centre)]
        if stage_size != size:
            param = Upsampled(param, size)
        param = param.to(device)
        if k == 0 and r.init == "equidistant":
            base = make_param(r.param, stage_size, 1, model.channels, seed, r.decay_power, magnitude)
            base = (Upsampled(base, size) if stage_size != size else base).to(device)
            baseline_p = equidistant_start(model, base, steps=max(8, r.steps // 8), lr=r.lr, seed=seed)
            spread(base, param, seed)
        if k == 0 and matching is not None:
            if r.match_weight is None:
                balance(model, objective, param, matching, r.match_ratio)
            else:
                matching.weight = float(r.match_weight)
        optimizer = cosine(steps, r.lr) if r.lr_schedule == "cosine" else "adam"
        result = optimize(model, objective, param, stage_regs, steps=steps, lr=r.lr, optimizer=optimizer,
                          seed=seed + k, progress=progress,
                          policies=[CaptureOptions(precision=precision, compile=compile, fold=fold)])
        image, stopped = result.input, stopped or result.stopped
        for n, h in result.history.items():
            if h.dim() == 2:
                history.setdefault(n, []).append(h)
    seconds = time.perf_counter() - start  # generation only (set-up, balancing, start, steps)
    scores = evaluate_images(model, image, item_classes, evaluators, heldout, seed)
    naturalness_rows = naturalness(image)
    run_settings = {"recipe": r.name, **r.settings(), "model": model.name, "size": list(size), "seed": seed,
                    "diversity": diversity, "match_weight": None if matching is None else round(matching.weight, 6),
                    "match_layers": None if matching is None else list(matching.layers),
                    "reference": None if reference is None else str(reference), "batch": len(items),
                    "equidistant_max_p": baseline_p, "evaluators": [e.name for e in evaluators], "stopped": stopped,
                    "precision": precision, "compile": compile, "fold": fold}
    history = {n: torch.cat(h) for n, h in history.items()}
    out = []
    for i, (c, k) in enumerate(items):
        out.append(Prototype(
            cls=c, name=names[c] if names else str(c), k=k, per_class=per_class, image=image[i],
            objective=float(result.values[i]), seconds=seconds / len(items), settings=run_settings,
            metrics={**scores[i], "naturalness": naturalness_rows[i]},
            history={n: [round(float(v), 5) for v in h[:, i]] for n, h in history.items()}))
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
