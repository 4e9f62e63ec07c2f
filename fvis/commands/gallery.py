"""``fvis gallery``: a static index.html of a run folder (images, settings, metrics, curves)."""
from __future__ import annotations

from pathlib import Path

from ..datasets import warnings_as_lines
from ..gallery import build_gallery

HELP = "a static index.html of a run folder (images, settings, metrics, curves)"


def add_arguments(parser) -> None:
    parser.add_argument("folder", type=Path, help="run folder (searched recursively for *.png with a *.json)")
    parser.add_argument("--out", type=Path, help="HTML file (default: FOLDER/index.html)")


def run(args) -> None:
    """``fvis gallery RUN_DIR [--out FILE]``."""
    with warnings_as_lines():
        path, shown, skipped = build_gallery(args.folder, args.out)
    print(f"{path}: {shown} image(s){f', {skipped} file(s) skipped' if skipped else ''}")
