"""``fvis entangle``: how entangled classes are: p(class j | prototype of class i), feature cosine."""
from __future__ import annotations

from pathlib import Path

from ..datasets import warnings_as_lines
from ..entangle import entangle_folder
from ..errors import FvisError
from ..files import check_writable
from ._args import MODEL_HELP, add_model_args, load_model, positive_int

HELP = "how entangled classes are: p(class j | prototype of class i), feature cosine"


def add_arguments(parser) -> None:
    parser.add_argument("folder", type=Path, help="prototype images <class index>_*.png")
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--layer", help="feature layer (default: the pooled penultimate layer, e.g. _avg_pooling)")
    parser.add_argument("--top", type=positive_int, default=10, help="most entangled pairs to report (default 10)")
    parser.add_argument("--out", type=Path, help="where entanglement.{csv,json,png} go (default: the folder)")
    add_model_args(parser)


def run(args) -> None:
    """``fvis entangle DIR --model M [--layer L] [--top N] [--out DIR]``: write the files, print the top pairs."""
    if not args.folder.is_dir():
        raise FvisError(f"not a folder: {args.folder}")
    out = check_writable(args.out or args.folder)
    model = load_model(args)
    with warnings_as_lines():
        report = entangle_folder(args.folder, model, args.layer, args.top, out)
    print(f"# {model.name}, {len(report['classes'])} classes, features from {report['layer']}; "
          f"score = (p(b|a) + p(a|b)) / 2, p renormalized over the classes")
    labels = [(f"{p['a']} {p['name_a']}", f"{p['b']} {p['name_b']}") for p in report["pairs"]]
    width = max(len(text) for pair in labels for text in pair)
    print(f"{'a':<{width}}  {'b':<{width}}  {'score':>6} {'p(b|a)':>6} {'p(a|b)':>6} {'cosine':>6}")
    for (a, b), p in zip(labels, report["pairs"]):
        print(f"{a:<{width}}  {b:<{width}}  {p['score']:6.4f} {p['p_b_given_a']:6.4f} "
              f"{p['p_a_given_b']:6.4f} {p['feature_cosine']:6.3f}")
    print(f"-> {out}/entanglement.{{csv,json,png}}, entanglement_features.csv")
