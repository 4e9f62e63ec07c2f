"""Inline display in notebooks: every fvis result shows itself (``_repr_png_`` /
``_repr_html_``) and :func:`show` lays out several in one grid.

Results say *what* to show by returning a :class:`Panel` from ``_panel()`` (images with labels,
key figures, a table); this module alone says *how*. It imports neither IPython nor matplotlib:
PNGs are drawn by Pillow (:func:`fvis.files.sheet_image`), HTML is plain markup in which every
piece of text (class names, prompts, file names) is escaped, and images travel as ``data:`` URLs.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .files import atomic_write, sheet_image


@dataclass
class Panel:
    """What one result shows: ``images`` ``(C, H, W)`` in [0, 1] with one label each, ``figures``
    (name -> value: the key numbers), ``table`` (rows of name -> value, for results that are
    tables: inversion restarts, TCAV scores) and the tile size in pixels."""

    title: str
    images: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    table: list = field(default_factory=list)
    tile: int = 160
    columns: int | None = None


def fmt(value) -> str:
    """A number to 3 significant digits, a bool as yes/no, anything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def panel_image(p: Panel) -> Image.Image | None:
    """The panel's images as one labelled sheet (``None`` when it has none)."""
    if not p.images:
        return None
    labels = list(p.labels) + [""] * (len(p.images) - len(p.labels))
    return sheet_image(p.images, labels, p.columns or min(len(p.images), 6), p.tile, lines=3)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _figures_html(figures: dict) -> str:
    return "".join(f"<span style='margin-right:1em'><b>{escape(str(k))}</b> {escape(fmt(v))}</span>"
                   for k, v in figures.items())


def _table_html(rows: Sequence[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{escape(fmt(row.get(c, '')))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    return f"<table style='border-collapse:collapse;font-size:12px'><tr>{head}</tr>{body}</table>"


def panel_html(p: Panel) -> str:
    """Title, the labelled sheet as an inline PNG, the key figures and the table, all text escaped."""
    parts = [f"<div class='fvis-panel'><div style='font-weight:bold'>{escape(p.title)}</div>"]
    image = panel_image(p)
    if image is not None:
        data = base64.b64encode(png_bytes(image)).decode("ascii")
        parts.append(f"<img alt='{escape(p.title, quote=True)}' src='data:image/png;base64,{data}'>")
    if p.figures:
        parts.append(f"<div style='font-size:12px'>{_figures_html(p.figures)}</div>")
    if p.table:
        parts.append(_table_html(p.table))
    return "".join(parts) + "</div>"


class Displayable:
    """Mix-in for result classes: define ``_panel()`` and the result shows itself in Jupyter."""

    def _panel(self) -> Panel:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _repr_png_(self) -> bytes | None:
        image = panel_image(self._panel())
        return None if image is None else png_bytes(image)

    def _repr_html_(self) -> str:
        return panel_html(self._panel())


def as_panel(item, title: str | None = None) -> Panel:
    """A :class:`Panel` for a result, an image tensor ``(C, H, W)`` / ``(B, C, H, W)``, a Pillow
    image or a NumPy array ``(H, W[, C])``."""
    if isinstance(item, Displayable):
        p = item._panel()
    elif isinstance(item, Image.Image):
        p = as_panel(np.asarray(item.convert("RGB")))
    elif isinstance(item, np.ndarray):
        arr = torch.from_numpy(np.array(item, dtype=np.float32))
        arr = arr / 255 if item.dtype == np.uint8 else arr
        p = as_panel(arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1))
        p.tile = min(max(arr.shape[:2]), 640)
    elif isinstance(item, torch.Tensor) and item.dim() in (3, 4):
        images = list(item.detach().float().cpu()) if item.dim() == 4 else [item.detach().float().cpu()]
        p = Panel("", images, [f"{i}" for i in range(len(images))] if len(images) > 1 else [""])
    else:
        raise TypeError(f"fvis.show cannot display {type(item).__name__}: give an fvis result, an image tensor "
                        f"(C, H, W) or (B, C, H, W), a Pillow image or a NumPy array")
    if title is not None:
        p.title = title
    return p


class Shown:
    """Several panels in one grid (what :func:`show` returns): shows itself in Jupyter and
    :meth:`save` writes it as ``.html`` or ``.png``."""

    def __init__(self, panels: list[Panel], columns: int):
        self.panels, self.columns = panels, columns

    def _repr_html_(self) -> str:
        cells = "".join(f"<div style='padding:4px'>{panel_html(p)}</div>" for p in self.panels)
        return (f"<div class='fvis-show' style='display:grid;grid-template-columns:repeat({self.columns}, auto);"
                f"align-items:start;justify-content:start'>{cells}</div>")

    def _repr_png_(self) -> bytes | None:
        image = self.image()
        return None if image is None else png_bytes(image)

    def image(self) -> Image.Image | None:
        """Every panel's images in one sheet, each label prefixed by its panel's title."""
        images, labels = [], []
        for p in self.panels:
            images += p.images
            labels += [f"{p.title}\n{label}" if p.title else label for label in
                       list(p.labels) + [""] * (len(p.images) - len(p.labels))]
        if not images:
            return None
        return sheet_image(images, labels, min(len(images), self.columns), min(p.tile for p in self.panels), lines=3)

    def save(self, path: str | Path) -> Path:
        """``.html``: a standalone page; ``.png``: :meth:`image`."""
        path = Path(path)
        if path.suffix.lower() == ".html":
            page = f"<!doctype html><meta charset='utf-8'><title>fvis</title><body>{self._repr_html_()}</body>"
            return atomic_write(path, lambda f: f.write(page.encode("utf-8")))
        image = self.image()
        if image is None:
            raise ValueError("nothing to draw as PNG: these results are tables; save as .html")
        return atomic_write(path, lambda f: image.save(f, format="PNG"))


def show(*items, columns: int = 3, titles: Sequence[str] | None = None) -> Shown:
    """A grid of any fvis results and images; lists and tuples are spread into their items.

    In a notebook the returned object displays itself (make it the cell's last expression, or
    pass it to ``IPython.display.display``); ``.save("grid.html")`` writes it to a file."""
    flat = []
    for item in items:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    if not flat:
        raise ValueError("fvis.show needs at least one result or image")
    titles = list(titles) if titles is not None else [None] * len(flat)
    if len(titles) != len(flat):
        raise ValueError(f"fvis.show got {len(titles)} titles for {len(flat)} items")
    return Shown([as_panel(item, t) for item, t in zip(flat, titles)], max(1, min(columns, len(flat))))
