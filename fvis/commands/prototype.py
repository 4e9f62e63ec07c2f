"""``fvis prototype``: class prototypes: class logit + activation matching (+ metrics, contact sheet)."""
from __future__ import annotations

from pathlib import Path

from ..classes import resolve_class
from ..errors import FvisError
from ..files import check_writable, list_images
from ..models import load
from ..prototype import make_prototypes, save_prototypes
from ._args import MODEL_HELP, add_model_args, add_run_args, load_model, nonnegative_int, positive_int, size

HELP = "class prototypes: class logit + activation matching (+ metrics, contact sheet)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--classes", required=True, metavar="C,C,...", help="class indices and/or names, e.g. 94,291,hummingbird")
    parser.add_argument("--per-class", type=positive_int, default=1, metavar="K", help="prototypes per class (diverse)")
    parser.add_argument("--steps", type=positive_int, default=512, help="optimization steps")
    parser.add_argument("--match", default="bn", metavar="bn|images:DIR|none", help="activation-matching source (default bn)")
    parser.add_argument("--match-ratio", type=float, default=1.0, help="matching gradient norm / objective's at the start")
    parser.add_argument("--match-layers", default="per-block", help="per-block | all | LAYER,LAYER,... (BN layers)")
    parser.add_argument("--param", choices=["fourier", "maco", "pixel"], default="fourier", help="input parameterization")
    parser.add_argument("--reference", type=Path, metavar="DIR", help="images for the MACO amplitude spectrum")
    parser.add_argument("--init", choices=["equidistant", "random"], default="equidistant", help="starting input")
    parser.add_argument("--high-freq", type=float, default=10.0, help="weight of the high-frequency energy penalty")
    parser.add_argument("--tv", type=float, default=0.0, help="weight of the total-variation penalty")
    parser.add_argument("--diversity", type=float, default=None, help="within-class diversity weight (default 50 when K > 1)")
    parser.add_argument("--size", type=size, help="image size N or HxW (default: the model's input size)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (Adam step size)")
    parser.add_argument("--evaluators", default="", metavar="M2,M3", help="independent models for the transfer metric")
    parser.add_argument("--heldout", type=nonnegative_int, default=32, metavar="N", help="held-out transforms for robustness")
    add_run_args(parser)
    add_model_args(parser)


def run(args) -> None:
    if not (args.match in ("bn", "none") or args.match.startswith("images:")):
        raise FvisError(f"unknown --match {args.match!r}: use bn, images:DIR or none")
    if args.match.startswith("images:"):
        list_images(args.match.split(":", 1)[1])  # the folder exists and holds images
    if args.reference is not None:
        list_images(args.reference)
    out = check_writable(args.out)
    model = load_model(args)
    classes = [resolve_class(c.strip(), model.class_names) for c in args.classes.split(",") if c.strip()]
    if not classes:
        raise FvisError("--classes is empty")
    evaluators = [load(name.strip(), device=args.device) for name in args.evaluators.split(",") if name.strip()]
    layers = args.match_layers if args.match_layers in ("per-block", "all") else args.match_layers.split(",")
    diversity = args.diversity if args.diversity is not None else (50.0 if args.per_class > 1 else 0.0)
    protos = make_prototypes(
        model, classes, per_class=args.per_class, steps=args.steps, match=args.match, param=args.param,
        init=args.init, size=args.size, lr=args.lr, seed=args.seed, tv=args.tv, high_freq=args.high_freq,
        match_ratio=args.match_ratio, match_layers=layers, diversity=diversity, reference=args.reference,
        evaluators=evaluators, heldout=args.heldout, progress=not args.quiet)
    save_prototypes(protos, out)
    print(f"{'image':<32} {'clean_p':>7} {'robust':>6} {'transfer':>8} {'hfer':>6}")
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for p in protos:
        m = p.metrics
        print(f"{p.stem + '.png':<32} {fmt(m['clean_p']):>7} {fmt(m['robustness']):>6} {fmt(m['transfer']):>8} {fmt(m['hfer']):>6}")
    print(f"{len(protos)} prototype(s) in {out}/ ({protos[0].seconds:.1f} s each; index.json, contact_sheet.png)")
