"""``fvis render``: render objectives (one batch item each) into a folder."""
from __future__ import annotations

import warnings
from pathlib import Path

import objectives

from ..concepts.objective import DIRECTION_FORM, FORM as CAV_FORM
from ..concepts.objective import is_cav_spec, parse_cav, steer
from ..datasets import warnings_as_lines
from ..errors import FvisError
from ..files import check_writable
from ..render import render, save_renders
from ._args import MODEL_HELP, add_execution_args, add_model_args, load_model, positive_int, size

HELP = "render objectives (one batch item each) into a folder"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--objective", "-o", action="append", required=True, metavar="SPEC",
                        help=f"channel:LAYER:C | neuron:LAYER:C[:X:Y] | layer:LAYER | logit:C | {CAV_FORM} "
                             f"(a concept's CAV saved by fvis tcav) | {DIRECTION_FORM} (a CAV, or any saved "
                             "vector: .npy/.pt/.safetensors) (repeatable)")
    steering = parser.add_mutually_exclusive_group()
    steering.add_argument("--toward", metavar=CAV_FORM, help="add a saved concept's CAV term to every objective")
    steering.add_argument("--away", metavar=CAV_FORM, help="subtract a saved concept's CAV term from every objective")
    parser.add_argument("--concept-weight", type=float, default=1.0,
                        help="weight of the --toward/--away term (in the layer's activation units; default 1)")
    parser.add_argument("--param", choices=["fourier", "pixel"], default="fourier", help="input parameterization")
    parser.add_argument("--size", type=size, help="image size N or HxW (default: the model's input size)")
    parser.add_argument("--steps", type=positive_int, default=256, help="optimization steps")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (Adam step size)")
    parser.add_argument("--optimizer", choices=["adam", "adamw", "nadam", "sgd", "rmsprop"], default="adam", help="optimizer")
    parser.add_argument("--decay-power", type=float, help="Fourier spectrum scale 1/f^D (default 1, Lucid's; higher: "
                        "coarse structure grows faster than fine detail); Fourier only")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes on the CPU)")
    parser.add_argument("--no-transforms", action="store_true", help="no transformation robustness")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="feed the model plain NCHW input (default on the CPU: channels-last, when the model takes it)")
    add_execution_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    add_model_args(parser)


def run(args) -> None:
    with warnings_as_lines():  # a flag without effect: one "fvis: warning: ..." line
        _run(args)


def _run(args) -> None:
    if args.decay_power is not None and args.param != "fourier":
        warnings.warn(f"--decay-power has no effect with --param {args.param} (Fourier only)")
    decay_power = 1.0 if args.decay_power is None else args.decay_power
    out = check_writable(args.out)
    model = load_model(args)
    objs = [parse_cav(spec) if is_cav_spec(spec) else objectives.parse(spec, model.class_names)
            for spec in args.objective]
    base, term, concept = list(objs), None, args.toward or args.away
    if concept is not None:
        if not is_cav_spec(concept):
            raise FvisError(f"--{'toward' if args.toward else 'away'} {concept!r}: expected {CAV_FORM} or {DIRECTION_FORM}")
        term = parse_cav(concept)
        objs = [steer(o, term, args.concept_weight, away=args.away is not None) for o in objs]
    settings = {"param": args.param, "size": list(args.size or model.input_size), "steps": args.steps,
                "lr": args.lr, "optimizer": args.optimizer, "decay_power": decay_power if args.param == "fourier" else None,
                "seed": args.seed, "transforms": not args.no_transforms, "weights": args.weights,
                "device": args.device, "channels_last": "no" if args.no_channels_last else "auto",
                "precision": args.precision, "compile": args.compile, "fold": args.fold}
    if concept is not None:
        settings.update({"toward" if args.toward else "away": concept, "concept_weight": args.concept_weight})
    result = render(model, objs, param=args.param, size=args.size, steps=args.steps, lr=args.lr,
                    seed=args.seed, transforms=not args.no_transforms, decay_power=decay_power,
                    optimizer=args.optimizer, progress=not args.quiet,
                    channels_last=False if args.no_channels_last else None, precision=args.precision,
                    compile=args.compile, fold=args.fold)
    save_renders(result, model, args.objective, out, settings)
    for i, (spec, value) in enumerate(zip(args.objective, result.values)):
        terms = "".join(f"\t{o.name} {float(result.history[o.name][-1, i]):.4g}" for o in (base[i], term)
                        if term is not None and o.name in result.history)
        print(f"{spec}\tobjective {float(value):.4g}{terms}")
    note = f", stopped early: {result.stopped}" if result.stopped else ""
    print(f"{len(objs)} image(s) in {out}/ ({result.steps} steps, {result.seconds:.1f} s, "
          f"{result.seconds_per_step:.3f} s/step{note})")
