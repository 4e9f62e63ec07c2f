"""``fvis prototype``: class prototypes by a named recipe (+ metrics, naturalness, contact sheet)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..classes import resolve_class
from ..datasets import warnings_as_lines
from ..errors import FvisError
from ..files import check_writable, list_images
from ..models import load
from ..params.transparent import BACKDROPS
from ..prototype import make_prototypes, save_prototypes
from ..recipes import (DEFAULT as DEFAULT_RECIPE, LR_SCHEDULES, MATCH_LAYERS, MATCH_OVER, MATCH_STATS, PARAMS, RECIPES,
                       RELEVANCE_LAYERS, SCORES, SOURCES, get_recipe)
from ._args import (MODEL_HELP, add_execution_args, add_model_args, add_run_args, load_model, nonnegative_int,
                    positive_int, size)

def scale_range(text: str) -> tuple[float, float]:
    """``0.8,1.2``: the transforms' smallest and largest scale factor."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers, e.g. 0.8,1.2), got {text!r}") from None
    return lo, hi


HELP = "class prototypes by a named recipe (+ metrics, naturalness, contact sheet)"


def recipe_values(field: str) -> str:
    """Each recipe's value of ``field`` for a help text, recipes with one value named together, the largest
    group last as "others" (``"cosine: 1.25; others: 1"``; words quoted: ``"... cosine: 'cosine'"``): written from :data:`RECIPES`, never by hand."""
    groups: dict = {}
    for name, recipe in RECIPES.items():
        groups.setdefault(getattr(recipe, field), []).append(name)

    def shown(value) -> str:
        if isinstance(value, tuple):
            return ",".join(shown(v) for v in value)
        if isinstance(value, str):  # quoted: "deepinversion, cosine: 'cosine'" names a recipe, then a value
            return repr(value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    ordered = sorted(groups.items(), key=lambda kv: len(kv[1]))
    parts = [f"{', '.join(names)}: {shown(value)}" for value, names in ordered[:-1]]
    return "; ".join([*parts, f"others: {shown(ordered[-1][0])}"]) if parts else f"every recipe: {shown(ordered[0][0])}"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--classes", required=True, metavar="C,C,...", help="class indices and/or names, e.g. 94,291,hummingbird")
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help=f"{' | '.join(RECIPES)} (default {DEFAULT_RECIPE}); the flags below override its settings")
    parser.add_argument("--per-class", type=positive_int, default=1, metavar="K", help="prototypes per class (diverse)")
    parser.add_argument("--steps", type=positive_int, help=f"optimization steps ({recipe_values('steps')})")
    parser.add_argument("--match", metavar="|".join(SOURCES), help="natural-activation source")
    parser.add_argument("--match-stat", choices=MATCH_STATS, help="match mean/std or whole sorted distributions")
    parser.add_argument("--match-over", choices=MATCH_OVER, help="statistics of each image or of the whole batch")
    parser.add_argument("--match-ratio", type=float, help="matching gradient norm / objective's at the start")
    parser.add_argument("--match-layers", help=f"{' | '.join(MATCH_LAYERS)} | LAYER,LAYER,...")
    parser.add_argument("--relevance", type=float, metavar="SHARE", help="keep the gradient of only this share of "
                        "channels at each relevance layer, the most relevant to the loss by gradient x activation "
                        f"(VITAL's relevant information flow; 0: off; {recipe_values('relevance')})")
    parser.add_argument("--relevance-layers", metavar="|".join(RELEVANCE_LAYERS) + "|L,L", help="where --relevance filters: the "
                        "last block's output (last, the default; on a model without EfficientNet blocks the last of "
                        "fvis evaluate's path layers), every block's output (blocks: measured on Lite0, the class does "
                        "not rise), the --match-layers (matched) or named layers")
    parser.add_argument("--param", choices=PARAMS, help="input parameterization")
    parser.add_argument("--decay-power", type=float, metavar="D", help="Fourier spectrum scale 1/f^D of the image and "
                        f"of a transparent image's opacity ({recipe_values('decay_power')}, Lucid's; higher: coarse structure "
                        "grows faster than fine detail)")
    parser.add_argument("--reference", type=Path, metavar="DIR", help="images for the MACO amplitude spectrum")
    parser.add_argument("--init", metavar="random|equidistant|image:PATH", help="start (image:PATH: accentuate a photo)")
    parser.add_argument("--alpha", type=float, help="weight of the opacity penalty: > 0 gives the image an alpha channel, "
                        f"random backgrounds while optimizing (transparency; 0: none; {recipe_values('alpha')})")
    parser.add_argument("--backdrop", choices=BACKDROPS, help="what a transparent image is shown over (default blur)")
    parser.add_argument("--backdrop-share", type=float, metavar="S", help="share of the optimization's grounds that are "
                        f"the backdrop itself (0..1; the rest random; {recipe_values('backdrop_share')})")
    parser.add_argument("--centre", type=float, metavar="C", help="opacity penalty weighted 1 + C r^2 by the distance r "
                        "from the centre (1 at the middle of every side): the kept part gathers in one central region "
                        f"(transparency only; {recipe_values('centre')})")
    parser.add_argument("--coarse", type=float, help=f"share of steps at half resolution (coarse-to-fine; {recipe_values('coarse')})")
    parser.add_argument("--flip", type=float, help=f"probability of mirroring in the transforms ({recipe_values('flip')})")
    parser.add_argument("--jitter", type=nonnegative_int, help=f"transforms' random shift in px ({recipe_values('jitter')})")
    parser.add_argument("--scale-range", type=scale_range, metavar="LO,HI", help=f"transforms' scale factors ({recipe_values('scale_range')})")
    parser.add_argument("--degrees", type=float, help=f"transforms' rotation within +-degrees ({recipe_values('degrees')})")
    parser.add_argument("--blur", type=float, help=f"random Gaussian blur after the transforms: largest sigma in px (0: none; {recipe_values('blur')})")
    parser.add_argument("--colour-shift", type=float, metavar="S", help="random colour shift after the transforms: each "
                        "channel scaled by exp(U(-S,S)) about mid-grey and shifted by U(-S,S), per item (Plug-In "
                        f"Inversion's ColorShift; 0: none; {recipe_values('colour_shift')})")
    parser.add_argument("--high-freq", type=float, help=f"weight of the high-frequency share (HFER) penalty ({recipe_values('high_freq')})")
    parser.add_argument("--hf-energy", type=float, help=f"weight of the absolute high-frequency energy penalty ({recipe_values('hf_energy')})")
    parser.add_argument("--tv", type=float, help=f"weight of the total-variation penalty ({recipe_values('tv')})")
    parser.add_argument("--l2", type=float, help=f"weight of the L2 prior (distance from grey; {recipe_values('l2')})")
    parser.add_argument("--score", choices=SCORES, help="what is raised for the class: logit, log_prob (log-softmax) "
                        f"or log_odds (the logit minus the log-sum-exp of the other logits; {recipe_values('score')})")
    parser.add_argument("--diversity", type=float, default=None, help="within-class diversity weight (default 50 when K > 1)")
    parser.add_argument("--size", type=size, help="image size N or HxW (default: the model's input size)")
    parser.add_argument("--lr", type=float, help=f"learning rate ({recipe_values('lr')})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="learning rate over the steps: constant, or "
                        f"cosine down to a tenth ({recipe_values('lr_schedule')})")
    parser.add_argument("--evaluators", default="", metavar="M2,M3", help="independent models for the transfer metric")
    parser.add_argument("--heldout", type=nonnegative_int, default=32, metavar="N", help="transforms per family (held-out, unseen) for robustness and transfer (0: none)")
    add_execution_args(parser)
    add_run_args(parser)
    add_model_args(parser)


def run(args) -> None:
    with warnings_as_lines():  # a repeated class, a flag without effect: one "fvis: warning: ..." line each
        _run(args)


def _run(args) -> None:
    def layer_names(text: str | None, keywords) -> str | tuple | None:  # a keyword, or LAYER,LAYER,...
        return text if text is None or text in keywords else tuple(n.strip() for n in text.split(",") if n.strip())

    layers = layer_names(args.match_layers, MATCH_LAYERS)
    relevance_layers = layer_names(args.relevance_layers, RELEVANCE_LAYERS)
    recipe = get_recipe(args.recipe or DEFAULT_RECIPE).replace(  # every check of the settings, before any work
        steps=args.steps, match=args.match, match_stat=args.match_stat, match_over=args.match_over,
        match_ratio=args.match_ratio, match_layers=layers, relevance=args.relevance,
        relevance_layers=relevance_layers, param=args.param, decay_power=args.decay_power, init=args.init, alpha=args.alpha, backdrop=args.backdrop,
        backdrop_share=args.backdrop_share, centre=args.centre, coarse=args.coarse,
        flip=args.flip, jitter=args.jitter, scale_range=args.scale_range, degrees=args.degrees, blur=args.blur, colour_shift=args.colour_shift, high_freq=args.high_freq, hf_energy=args.hf_energy, tv=args.tv, l2=args.l2, lr=args.lr, lr_schedule=args.lr_schedule, score=args.score, diversity=args.diversity)
    recipe.warn_without_effect(vars(args), flags=True)  # a flag the recipe ignores: one warning line
    if recipe.match.startswith("images:"):
        list_images(recipe.match.split(":", 1)[1])  # the folder exists and holds images
    if args.reference is not None:
        list_images(args.reference)
    out = check_writable(args.out)
    model = load_model(args)
    classes = [resolve_class(c.strip(), model.class_names) for c in args.classes.split(",") if c.strip()]
    if not classes:
        raise FvisError("--classes is empty")
    evaluators = [load(name.strip(), device=args.device) for name in args.evaluators.split(",") if name.strip()]
    protos = make_prototypes(model, classes, recipe=recipe, per_class=args.per_class, size=args.size, seed=args.seed,
                             reference=args.reference, evaluators=evaluators, heldout=args.heldout,
                             progress=not args.quiet, precision=args.precision, compile=args.compile,
                             fold=args.fold)
    save_prototypes(protos, out)
    print(f"{'image':<32} {'clean_p':>7} {'robust':>6} {'transfer':>8} {'hfer':>6} {'natural':>7}")
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for p in protos:
        m, n = p.metrics, p.metrics["naturalness"]
        print(f"{p.stem + '.png':<32} {fmt(m['clean_p']):>7} {fmt(m['robustness']):>6} {fmt(m['transfer']):>8} "
              f"{fmt(m['hfer']):>6} {n['natural_in_range']:>4}/{n['natural_total']}")
    print(f"{len(protos)} prototype(s) in {out}/ (recipe {recipe.name}, {protos[0].seconds:.1f} s each; "
          f"index.json, contact_sheet.png)")
