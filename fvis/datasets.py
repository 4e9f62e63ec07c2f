"""Reading folders of images, one rule for every command: unreadable files are skipped, counted
and named in one warning."""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .errors import FvisError
from .files import list_images, load_image


@dataclass
class ImageFolder:
    """Iterate ``(paths, images (B, C, H, W))`` batches of the images in ``folder`` (as
    :func:`fvis.files.list_images`: image suffixes, not recursive, sorted by name), resized
    (short side) and centre-cropped to ``size``. The folder rule of every command: a file that
    cannot be read is skipped and counted, and one warning names them all at the end of the
    iteration; ``skipped`` lists ``(path, reason)`` so a run can report the count."""

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
                continue
            if len(images) == self.batch_size:
                yield paths, torch.stack(images)
                paths, images = [], []
        if images:
            yield paths, torch.stack(images)
        warn_skipped(self.skipped)

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


def read_images(paths: Sequence[Path], size: int | tuple[int, int] | None = None, channels: int = 3,
                **options) -> tuple[list[int], list[torch.Tensor], list[tuple[Path, str]]]:
    """The same rule for a list of files: ``(indices read, images, skipped (path, reason))``;
    unreadable files are skipped, not fatal. The caller warns once with :func:`warn_skipped`."""
    kept, images, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(load_image(path, size, channels, **options))
            kept.append(i)
        except FvisError as e:
            skipped.append((Path(path), str(e)))
    return kept, images, skipped


def warn_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    """One warning for every unreadable file of a run (nothing when none was skipped)."""
    if len(skipped) == 1:
        warnings.warn(f"fvis: skipping unreadable image: {skipped[0][1]}", stacklevel=3)
    elif skipped:
        names = ", ".join(p.name for p, _ in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"fvis: skipping unreadable images: {len(skipped)} files ({names})", stacklevel=3)


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
