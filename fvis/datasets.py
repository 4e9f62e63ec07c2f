"""A folder of images read in batches; unreadable files are skipped with a warning and counted."""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .errors import FvisError
from .files import list_images, load_image


@dataclass
class ImageFolder:
    """Iterate ``(paths, images (B, C, H, W))`` batches of the images in ``folder`` (as
    :func:`fvis.files.list_images`: image suffixes, not recursive, sorted by name), resized
    (short side) and centre-cropped to ``size``. A file that cannot be read is skipped with a
    warning; ``skipped`` lists ``(path, reason)`` so a run can report the count at the end."""

    folder: str | Path
    size: int | tuple[int, int]
    batch_size: int = 16
    channels: int = 3
    files: list[Path] = field(init=False)
    skipped: list[tuple[Path, str]] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.files = list_images(self.folder)  # FvisError when missing or empty

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[tuple[list[Path], torch.Tensor]]:
        self.skipped = []
        paths, images = [], []
        for path in self.files:
            try:
                images.append(load_image(path, self.size, self.channels))
                paths.append(path)
            except FvisError as e:
                self.skipped.append((path, str(e)))
                warnings.warn(f"fvis: skipping unreadable image: {e}", stacklevel=2)
                continue
            if len(images) == self.batch_size:
                yield paths, torch.stack(images)
                paths, images = [], []
        if images:
            yield paths, torch.stack(images)

    @property
    def read(self) -> int:
        """Images read by the last full iteration."""
        return len(self.files) - len(self.skipped)

    def summary(self) -> str:
        """``"read 41 of 42 images; skipped 1 unreadable (bad.jpg)"``."""
        text = f"read {self.read} of {len(self.files)} images"
        if self.skipped:
            names = ", ".join(p.name for p, _ in self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
            text += f"; skipped {len(self.skipped)} unreadable ({names})"
        return text


@contextlib.contextmanager
def warnings_as_lines():
    """For the command line: each warning raised inside (e.g. a skipped file) is printed at once
    as one ``fvis: warning: ...`` line on stderr, without file/line noise."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"fvis: warning: {str(message).removeprefix('fvis: ')}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield
