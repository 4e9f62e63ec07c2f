"""``fvis layers``: print every module with its type and output shape."""
from __future__ import annotations

import torch

from ..hooks import output_shapes
from ..lm import is_language_model, load_lm
from ._args import MODEL_HELP, add_model_args, load_model, size

SAMPLE_TEXT = "The quick brown fox"
HELP = "print every module with its type and output shape"


def add_arguments(parser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--size", type=size, help="input size N or HxW (default: the model's)")
    add_model_args(parser)


def run(args) -> None:
    if is_language_model(args.model):  # names for fvis invert --neuron MODULE:I
        lm = load_lm(args.model, device=args.device)
        x = lm.embed(torch.tensor(lm.encode(SAMPLE_TEXT), device=lm.device))[None].float()
        rows = output_shapes(lm, x)
        header = f"# {lm.name}: input embeddings {tuple(x.shape)} of {SAMPLE_TEXT!r}; shapes are of one dry forward"
    else:
        model = load_model(args)
        h, w = args.size or model.input_size
        x = torch.full((1, model.channels, h, w), 0.5, device=args.device)
        rows = output_shapes(model, x)
        header = f"# {model.name}: input (1, {model.channels}, {h}, {w}) in [0, 1]; shapes are of one dry forward"
    width = max(len(name) for name, *_ in rows)
    print(header)
    for name, kind, shape, calls in rows:
        where = "(not called)" if calls == 0 else f"{shape}" + (f"  x{calls} calls (last shown)" if calls > 1 else "")
        print(f"{name:<{width}}  {kind:<24} {where}")
