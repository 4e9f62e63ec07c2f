"""``fvis topk``: the images of a folder that drive a channel (or neuron) most."""
from __future__ import annotations

from pathlib import Path

from ..datasets import warnings_as_lines
from ..files import check_writable
from ..inspection import save_top_k, top_k
from ._args import MODEL_HELP, add_model_args, add_run_args, load_model, positive_int

HELP = "the images of a folder that drive a channel (or neuron) most"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--layer", required=True, help="layer name (see fvis layers MODEL)")
    parser.add_argument("--channel", required=True, type=int, help="channel index in the layer")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of images")
    parser.add_argument("-k", type=positive_int, default=9, help="how many top images")
    parser.add_argument("--x", type=int, help="neuron column (with --y: rank one neuron instead of the channel mean)")
    parser.add_argument("--y", type=int, help="neuron row")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    add_run_args(parser, seed=False)
    add_model_args(parser)


def run(args) -> None:
    """``fvis topk``: the top-K images of a folder for a channel (or neuron) of a layer."""
    out = check_writable(args.out)
    model = load_model(args)
    with warnings_as_lines():
        result = top_k(model, args.images, args.layer, args.channel, k=args.k, x=args.x, y=args.y,
                       batch_size=args.batch_size, progress=not args.quiet)
    for i, e in enumerate(result.entries):
        print(f"#{i + 1:<3} {e['score']:10.4g}  {e['path']}")
    skipped = f"; skipped {len(result.skipped)} unreadable file(s)" if result.skipped else ""
    written = save_top_k(result, out)
    print(f"{result.objective}: top {len(result.entries)} of {result.read} images{skipped} -> {len(written)} files in {out}/")
