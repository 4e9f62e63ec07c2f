"""The ``fvis`` command line. Bad input: one clear line on stderr, exit status 2, no traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FvisError


def _size(text: str):
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            size = (int(h), int(w))
        else:
            size = (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if min(size) < 16:
        raise argparse.ArgumentTypeError(f"image size must be at least 16 px, got {text!r}")
    return size


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="PATH", help="local state-dict for the architecture (weights_only load)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvis", description="Optimization-based feature visualization.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list loadable model names")

    p = sub.add_parser("layers", help="print every module with its type and output shape")
    p.add_argument("model")
    p.add_argument("--size", type=_size, help="input size N or HxW (default: the model's)")
    _add_model_args(p)

    p = sub.add_parser("render", help="render objectives (one batch item each) into a folder")
    p.add_argument("--model", required=True)
    p.add_argument("--objective", "-o", action="append", required=True, metavar="SPEC",
                   help="channel:LAYER:C | neuron:LAYER:C[:X:Y] | layer:LAYER | logit:C (repeatable)")
    p.add_argument("--param", choices=["fourier", "pixel"], default="fourier")
    p.add_argument("--size", type=_size, help="image size N or HxW (default: the model's input size)")
    p.add_argument("--steps", type=_positive_int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["adam", "adamw", "nadam", "sgd", "rmsprop"], default="adam")
    p.add_argument("--decay-power", type=float, default=1.0, help="Fourier spectrum decay (higher = smoother)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-transforms", action="store_true", help="no transformation robustness")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)
    return parser


def cmd_models(args) -> None:
    from .models import EFFICIENTNET_LITE, available

    for name in available():
        print(f"{name}\t{'offline weights' if name in EFFICIENTNET_LITE else 'torchvision (downloads once)'}")


def cmd_layers(args) -> None:
    import torch

    from .hooks import output_shapes
    from .models import load

    model = load(args.model, args.weights, args.device)
    h, w = args.size or model.input_size
    x = torch.full((1, model.channels, h, w), 0.5, device=args.device)
    rows = output_shapes(model, x)
    width = max(len(name) for name, *_ in rows)
    print(f"# {model.name}: input (1, {model.channels}, {h}, {w}) in [0, 1]; shapes are of one dry forward")
    for name, kind, shape, calls in rows:
        where = "(not called)" if calls == 0 else f"{shape}" + (f"  x{calls} calls (last shown)" if calls > 1 else "")
        print(f"{name:<{width}}  {kind:<24} {where}")


def cmd_render(args) -> None:
    import objectives

    from .io import check_writable
    from .models import load
    from .render import render, save_renders

    out = check_writable(args.out)
    model = load(args.model, args.weights, args.device)
    objs = [objectives.parse(spec, model.class_names) for spec in args.objective]
    settings = {"param": args.param, "size": list(args.size or model.input_size), "steps": args.steps,
                "lr": args.lr, "optimizer": args.optimizer, "decay_power": args.decay_power,
                "seed": args.seed, "transforms": not args.no_transforms, "weights": args.weights,
                "device": args.device}
    result = render(model, objs, param=args.param, size=args.size, steps=args.steps, lr=args.lr,
                    seed=args.seed, transforms=not args.no_transforms, decay_power=args.decay_power,
                    optimizer=args.optimizer, progress=not args.quiet)
    save_renders(result, model, args.objective, out, settings)
    for spec, value in zip(args.objective, result.values):
        print(f"{spec}\tobjective {float(value):.4g}")
    note = f", stopped early: {result.stopped}" if result.stopped else ""
    print(f"{len(objs)} image(s) in {out}/ ({result.steps} steps, {result.seconds:.1f} s, "
          f"{result.seconds_per_step:.3f} s/step{note})")


COMMANDS = {"models": cmd_models, "layers": cmd_layers, "render": cmd_render}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except FvisError as e:
        print(f"fvis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fvis: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
