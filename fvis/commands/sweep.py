"""``fvis sweep``: run a TOML list of jobs into a resumable run folder (torchrun: split across ranks)."""
from __future__ import annotations

from pathlib import Path

from ..sweep import sweep

HELP = "run a TOML list of jobs into a resumable run folder (torchrun: split across ranks)"


def add_arguments(parser) -> None:
    parser.add_argument("config", type=Path, help="TOML: defaults (out, steps, size, seed, device, batch) and [[job]] tables")
    parser.add_argument("--out", type=Path, metavar="RUN_DIR", help="run folder (default: the config's out)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> None:
    sweep(args.config, args.out, progress=not args.quiet)
