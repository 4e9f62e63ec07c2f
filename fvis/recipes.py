"""Named prototype recipes: every setting of a prototype run in one validated, frozen record.

A :class:`Recipe` owns the defaults and the checks of :func:`fvis.prototype.make_prototypes`;
``fvis prototype --recipe NAME`` and ``make_prototypes(recipe=NAME)`` pick one of
:data:`RECIPES`, and any field can be overridden (``recipe.replace(steps=256)``).
What each recipe measured is in results/prototype/ (not here: docstrings describe, results measure).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from objectives.vision import SCORES

from .errors import FvisError, suggest
from .params.transparent import BACKDROPS

PARAMS = ("fourier", "maco", "pixel")
LR_SCHEDULES = ("constant", "cosine")
MATCH_LAYERS = ("per-block", "all")
MATCH_STATS = ("moments", "sorted")
MATCH_OVER = ("item", "batch")
RELEVANCE_LAYERS = ("last", "blocks", "matched")
SOURCES = ("bn", "images:DIR", "seed", "none")
RENAMED = {"log_prob": "use score='log_prob' (score: logit | log_prob | log_odds)"}  # old settings files say why they fail


@dataclass(frozen=True)
class Recipe:
    """Settings of a prototype run (all of them; the JSON of every prototype records them).

    Image: ``param`` (fourier | maco | pixel), ``decay_power`` (Fourier spectrum 1/f^d), ``init``
    (``random`` | ``equidistant``: the all-classes-equally-likely start | ``image:PATH``: start from
    a photo, feature accentuation), ``alpha`` (weight of the opacity penalty; > 0 gives the image an
    alpha channel: random smooth backgrounds while optimizing, ``backdrop`` (blur | grey) in the
    result, ``backdrop_share`` (share of the optimization's grounds that are that backdrop itself);
    :class:`fvis.params.Transparent`), ``centre`` (the opacity penalty weighted ``1 + centre * r^2``
    by the distance from the centre: one central region; :class:`regularizers.MaskArea`), ``coarse``
    (share of the steps optimized at half resolution before the full-resolution image takes over:
    coarse-to-fine).
    Optimizer: ``steps``, ``lr``, ``lr_schedule`` (constant | cosine: down to 10 % of ``lr``).
    Transforms: ``transforms`` (Lucid's pad/jitter/scale/rotate), ``flip`` (mirror probability),
    their strength ``jitter`` (px, first shift), ``scale_range`` (``(lo, hi)``, sampled in steps of
    0.02) and ``degrees`` (rotation within ``±degrees``); ``blur`` (after them, a Gaussian blur of
    sigma drawn per item in ``[0.1, blur]`` px; 0: none); ``colour_shift`` (after them, each channel scaled by
    ``exp(U(-s, s))`` about mid-grey and shifted by ``U(-s, s)``, per item: Plug-In Inversion's ColorShift;
    0: none; :class:`regularizers.ColourShift`).
    Priors: ``tv`` (total variation), ``l2`` (mean squared distance from grey), ``high_freq``
    (the *share* of high-frequency energy, HFER), ``hf_energy`` (the absolute energy of the detail
    finer than a 1 px Gaussian: cannot be lowered by adding a blob).
    Natural activations: ``match`` is the source (``bn``: BatchNorm running statistics, data-free;
    ``images:DIR``: reference photos; ``seed``: the ``image:PATH`` start's own activations;
    ``none``), ``match_stat`` what is matched (``moments``: per-channel mean and std; ``sorted``:
    the whole per-channel distribution, 1-D Wasserstein, VITAL), ``match_over`` (``item``: each
    image; ``batch``: the whole batch pooled, DeepInversion), ``match_layers`` (``per-block`` | ``all``
    | tuple of layer names), ``first_layer`` (weight multiplier of the first matched layer),
    ``match_ratio`` (auto-balance: the matching gradient norm at the start / the objective's) or a
    fixed ``match_weight``, ``class_weight`` (class-mean term with class-named reference images).
    Relevant information flow (VITAL): ``relevance`` (the share of channels whose gradient is kept at each
    relevance layer, the most relevant to the loss by gradient x activation; 0: off;
    :class:`regularizers.RelevanceFilter`), ``relevance_layers`` (``last``: the last of ``fvis evaluate``'s
    path layers, the last block's output on EfficientNet | ``blocks``: all of them | ``matched``: the
    ``match_layers`` | tuple of layer names).
    Objective: ``score`` (``logit`` | ``log_prob``: log-softmax | ``log_odds``: the logit minus the
    log-sum-exp of the other logits; :func:`objectives.class_logits`), ``diversity`` (within-class
    diversity weight when several per class; ``None``: 50 then, else 0).
    """

    name: str = "custom"
    steps: int = 512
    param: str = "fourier"
    decay_power: float = 1.0
    init: str = "random"
    alpha: float = 0.0
    backdrop: str = "blur"
    backdrop_share: float = 0.0
    centre: float = 0.0
    coarse: float = 0.0
    lr: float = 0.05
    lr_schedule: str = "constant"
    transforms: bool = True
    flip: float = 0.0
    jitter: int = 8
    scale_range: tuple = (0.9, 1.1)
    degrees: float = 10.0
    blur: float = 0.0
    colour_shift: float = 0.0
    tv: float = 0.0
    l2: float = 0.0
    high_freq: float = 0.0
    hf_energy: float = 0.0
    match: str = "none"
    match_stat: str = "moments"
    match_over: str = "item"
    match_layers: str | tuple = "per-block"
    first_layer: float = 1.0
    match_ratio: float = 1.0
    match_weight: float | None = None
    class_weight: float = 1.0
    relevance: float = 0.0
    relevance_layers: str | tuple = "last"
    score: str = "logit"
    diversity: float | None = None

    def __post_init__(self):
        def bad(field, value, allowed):
            raise FvisError(f"recipe {self.name!r}: {field} must be {allowed}, got {value!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("steps", "jitter") and (not isinstance(v, int) or isinstance(v, bool) or v < (f.name == "steps")):
                bad(f.name, v, "a positive integer" if f.name == "steps" else "an integer >= 0")
            if f.type in ("float", "float | None") and v is not None and (
                    isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf):
                bad(f.name, v, "a finite number >= 0")
        if self.param not in PARAMS:
            bad("param", self.param, " | ".join(PARAMS))
        if not (self.init in ("random", "equidistant") or self.init.startswith("image:")):
            bad("init", self.init, "random | equidistant | image:PATH")
        if not (self.match in ("bn", "seed", "none") or self.match.startswith("images:")):
            bad("match", self.match, " | ".join(SOURCES))
        if self.match == "seed" and not self.init.startswith("image:"):
            bad("match", self.match, "used with init image:PATH (its own activations)")
        if self.score not in SCORES:
            bad("score", self.score, " | ".join(SCORES))
        if self.match_stat not in MATCH_STATS:
            bad("match_stat", self.match_stat, " | ".join(MATCH_STATS))
        if self.match_over not in MATCH_OVER:
            bad("match_over", self.match_over, " | ".join(MATCH_OVER))
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", self.lr_schedule, " | ".join(LR_SCHEDULES))
        if not 0 <= self.coarse < 1:
            bad("coarse", self.coarse, "a share of the steps in [0, 1)")
        if self.param == "maco" and (self.coarse or self.init.startswith("image:")):
            bad("param", self.param, "fourier or pixel with coarse-to-fine or an image start (maco optimizes phase only)")
        if self.backdrop not in BACKDROPS:
            bad("backdrop", self.backdrop, " | ".join(BACKDROPS))
        if not 0 <= self.backdrop_share <= 1:
            bad("backdrop_share", self.backdrop_share, "a share of the grounds in [0, 1]")
        if self.alpha and (self.param == "maco" or self.coarse or self.init != "random"):
            bad("alpha", self.alpha, "0 with maco, coarse-to-fine or a start other than random (transparency needs a "
                "fresh image: choose a recipe without it, e.g. robust-blur, or accentuate for an image start)")
        lo_hi = self.scale_range
        if (not isinstance(lo_hi, tuple) or len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi)
                or not 0 < lo_hi[0] <= lo_hi[1] < math.inf):
            bad("scale_range", lo_hi, "two scale factors 0 < lo <= hi")
        if not 0 <= self.flip <= 1:
            bad("flip", self.flip, "a probability in [0, 1]")
        for field, keywords in (("match_layers", MATCH_LAYERS), ("relevance_layers", RELEVANCE_LAYERS)):
            value = getattr(self, field)  # a keyword, or layer names (at least one)
            if isinstance(value, str) and value not in keywords:
                bad(field, value, " | ".join(keywords) + " | a list of layer names")
            if not isinstance(value, str) and not len(value):
                bad(field, value, "at least one layer name")
        if not 0 <= self.relevance <= 1:
            bad("relevance", self.relevance, "a share of channels in [0, 1] (0: off)")
        for source in (self.match, self.init):
            path = source.split(":", 1)[1] if source.startswith(("images:", "image:")) else None
            if path is not None and not Path(path).exists():
                raise FvisError(f"recipe {self.name!r}: {source.split(':', 1)[0]} path not found: {path}")

    def scales(self) -> tuple[float, ...]:
        """The transforms' discrete scale factors: ``scale_range`` in steps of 0.02."""
        lo, hi = self.scale_range
        n = max(int(round((hi - lo) / 0.02)), 0)
        return tuple(round(lo + (hi - lo) * i / max(n, 1), 4) for i in range(n + 1))

    def without_effect(self, given: Mapping[str, object]) -> dict[str, str]:
        """Of the settings a user gave (name -> value; None: not given), those this recipe ignores, each with why."""
        why = {}
        for name, value in given.items():
            if value is None:
                continue
            if name in ("backdrop", "backdrop_share", "centre") and not self.alpha:
                why[name] = f"without transparency (alpha > 0; recipe {self.name} has none)"
            elif name == "decay_power" and self.param != "fourier":
                why[name] = f"with param {self.param} (Fourier only)"
            elif name == "relevance_layers" and not self.relevance:
                why[name] = f"without relevance filtering (relevance > 0; recipe {self.name} has none)"
        return why

    def warn_without_effect(self, given: Mapping[str, object], flags: bool = False) -> None:
        """One warning per setting in ``given`` this recipe ignores (:meth:`without_effect`); ``flags``: name
        them as command-line flags (``--backdrop-share``), else as Python / TOML names (``backdrop_share``)."""
        for name, why in self.without_effect(given).items():
            shown = "--" + name.replace("_", "-") if flags else f"fvis: {name}"
            warnings.warn(f"{shown} has no effect {why}")

    def replace(self, **changes) -> "Recipe":
        """A copy with ``changes`` (unknown names are one clear error); ``None`` values are ignored."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key in RENAMED:
                raise FvisError(f"recipe setting {key!r} was replaced: {RENAMED[key]}")
            if key not in names:
                raise FvisError(f"unknown recipe setting {key!r}{suggest(key, names)}")
        changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def settings(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


# Lucent's recipe with stronger transformation robustness (shift 16 px, scale 0.8-1.2, rotation 15
# degrees, mirror half the time: the range of fvis's held-out transforms, drawn independently) and
# twice the steps. Named right by blind viewers 33 of 40 times at 1037 steps against 22 of 40 for
# `lucent` (two viewers; a third: 12 of 20) (results/prototype/robust_vs_lucent/README.md)
_ROBUST = Recipe("robust", jitter=16, scale_range=(0.8, 1.2), degrees=15.0, flip=0.5, steps=1024)
_BLUR = _ROBUST.replace(name="robust-blur", blur=1.0, hf_energy=500.0)
_TRANSPARENT = _BLUR.replace(name="transparent", alpha=30.0, backdrop_share=0.25)
_LOG_ODDS = _TRANSPARENT.replace(name="log-odds", score="log_odds", alpha=15.0)
_COSINE = _LOG_ODDS.replace(name="cosine", lr_schedule="cosine", alpha=7.5, decay_power=1.25)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # Lucent's / Lucid's class visualization: Fourier image, standard transforms, nothing else
    Recipe("lucent"),
    # fvis 0.1's prototype default: per-image BatchNorm moments on one BN per block, high-frequency
    # share penalty, equidistant start (kept for comparison; its HF *share* penalty made a bright centre)
    Recipe("bn-item", match="bn", init="equidistant", high_freq=10.0),
    # DeepInversion (Yin et al. 2020): batch BatchNorm statistics on every BN layer, first layer x10,
    # jitter and flips, TV and L2 priors, coarse-to-fine, cosine learning rate
    Recipe("deepinversion", match="bn", match_over="batch", match_layers="all", first_layer=10.0, flip=0.5,
           tv=0.25, l2=0.05, coarse=0.5, lr_schedule="cosine"),
    # VITAL-style (2025): whole per-channel distributions (sorted activations) of natural images
    Recipe("vital", match="bn", match_stat="sorted", flip=0.5),
    _ROBUST,
    # `robust` + a random blur of sigma up to 1 px after the transforms + the absolute high-frequency
    # energy penalty (500), so the evidence sits in larger structures that other networks and other
    # transforms read. On 20 fresh classes it beat `robust` on the rule fixed beforehand
    # (results/prototype/blur_hf_energy/README.md); the default until transparency replaced it.
    _BLUR,
    # `robust-blur` + transparency: an opacity of its own, weight 30 on the mean opacity, random smooth
    # backgrounds while optimizing and, a quarter of the time, the blurred backdrop the result is kept over:
    # the object on a calm ground. On fresh classes it beat `robust-blur` on the rule fixed beforehand
    # (results/prototype/backdrop_share/README.md; without the share: results/prototype/transparent/); the
    # default until `log-odds` replaced it.
    _TRANSPARENT,
    # `transparent` raising the class's log-odds (the logit minus the log-sum-exp of the other logits: the
    # push-down goes to its closest rivals) with half the opacity weight (at 30 the pictures were faint). On 40
    # fresh classes it met the rule fixed beforehand against `transparent` (59 vs 53 of 80 names; per class 13
    # better, 9 worse: p 0.52) (results/prototype/log_odds/README.md); the default until `cosine` replaced it.
    _LOG_ODDS,
    # `log-odds` with the learning rate falling along a cosine to a tenth (the last steps settle
    # the picture instead of adding fine detail) and half its opacity weight again (7.5: more of the picture is
    # object). At decay_power 1, on 40 fresh classes it met the rule fixed beforehand against `log-odds` (64 vs 62
    # of 80 names; per class 5 better, 5 worse; on a third set 30 vs 28 of 40). Then a steeper Fourier spectrum
    # (decay_power 1.25: coarse structure grows faster than fine) met its own rule on 20 more fresh classes
    # (25 vs 21 of 40 names; all three photo statistics in range for 15 images of 20 against 7; held-out
    # transfer 0.959, unseen-family 0.778 against 0.907; 8 in 10 not shown: 6.3 there) (results/prototype/cosine/README.md).
    # Over the five fresh sets it has met since: 140 of 200 names (7.0 in 10); Lucent's recipe 34 of 80 against its
    # 54 on two of them (results/prototype/default_7722/, grey_backdrop/); the default until `colour-shift`.
    _COSINE,
    # The default: `cosine` with a random colour shift after the transforms (each item's channels scaled by
    # exp(U(-0.3, 0.3)) about mid-grey and offset by U(-0.3, 0.3): Plug-In Inversion's ColorShift), so the class
    # cannot rest on one exact hue or level. On 40 fresh classes it met the rule fixed beforehand against `cosine`
    # (61 vs 57 of 80 names; per class 10 better, 7 worse: p 0.63; held-out transfer 0.938; all three photo
    # statistics in range for 32 images of 40 against 27); on a third fresh set 36 vs 29 of 40, so 97 of 120 names
    # over the 60 fresh classes it has met, 8.1 in 10 (results/prototype/colour_shift/README.md).
    _COSINE.replace(name="colour-shift", colour_shift=0.3),
    # feature accentuation (Hamblin et al. 2023): start from a photo, stay on its activation path
    Recipe("accentuate", init="image:", match="seed", match_stat="sorted", steps=256),
)}
DEFAULT = "colour-shift"


def get_recipe(name: str | Recipe) -> Recipe:
    """A recipe by name (close names suggested) or the recipe itself."""
    if isinstance(name, Recipe):
        return name
    if name not in RECIPES:
        raise FvisError(f"unknown recipe {name!r}.{suggest(name, RECIPES)} Recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
