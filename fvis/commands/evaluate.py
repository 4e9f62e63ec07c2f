"""``fvis evaluate``: score class images <class index>_*.png: clean p, robustness, transfer, HFER."""
from __future__ import annotations

from pathlib import Path

from ..datasets import warnings_as_lines
from ..errors import FvisError
from ..evaluate import evaluate_folder, markdown
from ..files import check_writable
from ..models import load
from ._args import add_model_args, load_model, nonnegative_int

HELP = "score class images <class index>_*.png: clean p, robustness, transfer, HFER"


def add_arguments(parser) -> None:
    parser.add_argument("folder", type=Path, help="folder of class images <class index>_*.png")
    parser.add_argument("--model", required=True, help="the model the images were made for")
    parser.add_argument("--evaluators", default="", metavar="M2,M3", help="independent models for transfer")
    parser.add_argument("--transforms", type=nonnegative_int, default=32, metavar="N", help="held-out transforms for robustness")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes on the CPU)")
    parser.add_argument("--out", type=Path, help="where evaluation.{csv,json,md} go (default: the folder)")
    parser.add_argument("--reference", type=Path, metavar="DIR",
                        help="natural images <class index>_*: adds activation-path similarity columns")
    add_model_args(parser)


def run(args) -> None:
    if not args.folder.is_dir():
        raise FvisError(f"not a folder: {args.folder}")
    check_writable(args.out or args.folder)
    model = load_model(args)
    evaluators = [load(name.strip(), device=args.device) for name in args.evaluators.split(",") if name.strip()]
    if args.reference is not None and not args.reference.is_dir():
        raise FvisError(f"not a folder: {args.reference}")
    with warnings_as_lines():  # skipped files: one "fvis: warning: ..." line each, no source line
        report = evaluate_folder(args.folder, model, evaluators, args.transforms, args.seed, args.out,
                                 reference=args.reference)
    print(markdown(report), end="")
