"""Argument types and shared flags of the command line (parsing only: checks of values live in
the library)."""
from __future__ import annotations

import argparse
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..datasets import warnings_as_lines
from ..execution import PRECISIONS
from ..files import check_writable, list_images
from ..models import ImageModel, load

MODEL_HELP = ("efficientnet-lite0/1/2 (offline), a torchvision classifier name (e.g. resnet50), "
              "or package.module:factory (a callable returning an nn.Module or an fvis model)")


def size(text: str):
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


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def fraction(text: str) -> float:
    """``0.03`` or ``8/255``."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def add_run_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """``--seed`` (optional), ``--quiet`` and a required ``--out`` folder."""
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes on the CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")


def numbers(text: str) -> tuple[float, ...]:
    """``0.485,0.456,0.406`` -> a tuple of floats."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--weights``, ``--device`` and, for ``package.module:factory`` models, ``--mean``,
    ``--std``, ``--input-size``: for every command that loads an image model."""
    p.add_argument("--weights", metavar="PATH", help="local state-dict for the architecture (weights_only load)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--mean", type=numbers, metavar="M,M,M",
                   help="per-channel input mean of a package.module:factory network (default: ImageNet's)")
    p.add_argument("--std", type=numbers, metavar="S,S,S",
                   help="per-channel input std of a package.module:factory network (default: ImageNet's)")
    p.add_argument("--input-size", type=size, metavar="N|HxW",
                   help="input size of a package.module:factory network (default: 224)")


def add_execution_args(p: argparse.ArgumentParser) -> None:
    """``--precision``, ``--compile`` (for GPU runs) and ``--fold``: how the model runs in the optimization."""
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="model forward in float32 or bfloat16 autocast (default fp32; bf16 is for GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model's forward and backward (off by default: not faster on the CPU)")
    p.add_argument("--fold", action="store_true",
                   help="run a checked copy of the model with BatchNorm and padding folded into its convolutions "
                        "(faster; the same images up to float rounding, not the same bytes)")


def load_model(args: argparse.Namespace) -> ImageModel:
    """The image model the flags of :func:`add_model_args` name."""
    return load(args.model, args.weights, args.device, mean=args.mean, std=args.std, input_size=args.input_size)


def folder_out_model(args: argparse.Namespace):
    """For commands over an image folder: check ``args.images`` (missing or empty: one clear line) and
    ``args.out`` before loading the model; returns ``(out, model)``."""
    list_images(args.images)
    out = check_writable(args.out)
    return out, load_model(args)


def add_folder_inputs(p: argparse.ArgumentParser, layer_help: str) -> None:
    """``--model``, ``--layer`` and ``--images`` (a folder) of a command over an image folder."""
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--layer", required=True, help=layer_help)
    p.add_argument("--images", required=True, type=Path, help="folder of images (unreadable files are skipped)")


def add_folder_command_args(p: argparse.ArgumentParser) -> None:
    """``--no-cache`` (activation cache), the run flags and the model flags of a folder command."""
    p.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    add_run_args(p)
    add_model_args(p)


@contextmanager
def warnings_as_lines_quiet_model():
    """Warnings as one line each, without the model package's ``torch.jit.script`` deprecation noise."""
    with warnings_as_lines():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
        yield
