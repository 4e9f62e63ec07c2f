"""Files: atomic writes (never a truncated file), images and JSON, contact sheets, clear errors on
unreadable input, output-folder checks, library versions. (Formerly ``fvis.io``, a name that
shadowed the standard library's ``io``; ``fvis.io`` stays as a thin re-export.)"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from .errors import FvisError


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Write ``path`` via ``write(binary file)`` into a temp file in the same folder, then rename
    it over ``path``: readers see the old file or the whole new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` float in [0, 1] -> uint8, rounding to nearest."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Save ``(C, H, W)`` / ``(1, C, H, W)`` in [0, 1] (C = 1 or 3) as a lossless PNG, atomically."""
    if image.dim() == 4:
        image = image[0]
    array = to_uint8(image).permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(Path(path), lambda f: pil.save(f, format="PNG"))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FvisError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FvisError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_image(path: str | Path, size: int | tuple[int, int] | None = None, channels: int = 3,
               min_side: int = 1) -> torch.Tensor:
    """Read an image file as ``(C, H, W)`` float in [0, 1]; ``size`` resizes the short side and
    centre-crops to ``(H, W)``. Unreadable files, and images with a side below ``min_side`` px,
    raise :class:`FvisError`."""
    path = Path(path)
    try:
        with Image.open(path) as pil:
            array = np.asarray(pil.convert("RGB" if channels == 3 else "L"))
    except FileNotFoundError:
        raise FvisError(f"image not found: {path}") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise FvisError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if min(array.shape[:2]) < min_side:
        raise FvisError(f"image {path} is too small ({array.shape[1]}x{array.shape[0]} px); "
                        f"need at least {min_side} px on each side")
    image = torch.from_numpy(array.copy()).float().div(255)
    image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        image = F.center_crop(F.resize(image, [min(h, w)], antialias=True), [h, w])
    return image


def write_json(data, path: str | Path) -> Path:
    text = json.dumps(data, indent=2, default=_jsonable).encode()
    return atomic_write(Path(path), lambda f: f.write(text + b"\n"))


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def contact_sheet(images: Sequence[torch.Tensor], labels: Sequence[str], path: str | Path,
                  columns: int | None = None, tile: int = 224, lines: int = 2) -> Path:
    """A labelled grid of ``(C, H, W)`` images in [0, 1], saved as PNG (see :func:`sheet_image`)."""
    sheet = sheet_image(images, labels, columns, tile, lines)
    return atomic_write(Path(path), lambda f: sheet.save(f, format="PNG"))


def sheet_image(images: Sequence[torch.Tensor], labels: Sequence[str], columns: int | None = None,
                tile: int = 224, lines: int = 2) -> Image.Image:
    """A labelled grid of ``(C, H, W)`` images in [0, 1] as a Pillow image (each fitted into a
    ``tile`` square, aspect kept); each label is word-wrapped to the tile width (``\n`` starts a
    new line) and cut at ``lines`` lines."""
    n = len(images)
    columns = columns or min(n, 6)
    rows = (n + columns - 1) // columns
    pad, line_h = 6, 13
    text_h = line_h * lines + 4
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = _label_font()
    for i, (img, label) in enumerate(zip(images, labels)):
        arr = to_uint8(img if img.shape[0] == 3 else img[:1].expand(3, -1, -1)).permute(1, 2, 0).numpy()
        h, w = arr.shape[:2]
        fit = (tile, max(1, round(tile * h / w))) if w >= h else (max(1, round(tile * w / h)), tile)
        pil = Image.fromarray(arr).resize(fit, Image.Resampling.LANCZOS)
        x, y = pad + (i % columns) * (tile + pad), pad + (i // columns) * (tile + text_h + pad)
        sheet.paste(pil, (x + (tile - fit[0]) // 2, y + (tile - fit[1]) // 2))
        wrapped = [w for part in label.split("\n") for w in _wrap(part, tile // 6)]
        for j, line in enumerate(wrapped[:lines]):
            draw.text((x, y + tile + 2 + line_h * j), line, fill="black", font=font)
    return sheet


def _label_font():
    """Pillow's built-in font at 11 px: at its default size the colons of specs such as
    ``logit:goldfinch`` vanish next to the letters. Bitmap default where FreeType is missing."""
    try:
        return ImageFont.load_default(size=11)
    except (TypeError, ImportError, OSError):  # old Pillow / no FreeType
        return ImageFont.load_default()


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def versions() -> dict[str, str]:
    """Versions of fvis and the libraries that shape its output."""
    out = {"python": platform.python_version()}
    for pkg in ("fvis", "torch", "torchvision", "kornia", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it is writable, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise FvisError(f"cannot write to output folder {folder}: {e.strerror or e}") from None
    return folder
