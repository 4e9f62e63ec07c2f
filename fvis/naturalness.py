"""Naturalness statistics of images: numbers photos satisfy and feature-visualization textures do
not, judged by no network (so no model family can share the generator's shortcuts).

Every statistic maps ``(B, 3, H, W)`` in [0, 1] to ``(B,)``. :data:`PHOTO_RANGES` holds the
range each one spans over crops of the offline sample photos (made by
``python scripts/naturalness_ranges.py``, which also checks that each statistic separates the
photos from plain class-logit renders; statistics that did not separate were dropped there).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

import torch

from regularizers import high_frequency_energy, luminance


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, H, W)``: :func:`regularizers.luminance`."""
    return luminance(x)[:, 0]


def colourfulness(x: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk (2003): ``std(rg, yb) + 0.3 * |mean(rg, yb)|`` with ``rg = R - G``,
    ``yb = (R + G) / 2 - B``, on the [0, 1] scale (their 0-255 values / 255)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt()
    mean = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return std + 0.3 * mean


def saturation(x: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation ``(max - min) / max`` over pixels (0 for black pixels)."""
    hi, lo = x.amax(1), x.amin(1)
    return torch.where(hi > 1e-6, (hi - lo) / hi.clamp_min(1e-6), 0.0).flatten(1).mean(1)


def centre_brightness(x: torch.Tensor) -> torch.Tensor:
    """Mean luminance of the central half (by side) minus that of the outer eighth ring."""
    lum = _luminance(x)
    h, w = lum.shape[-2:]
    centre = lum[:, h // 4: h - h // 4, w // 4: w - w // 4].flatten(1).mean(1)
    ring = torch.ones(h, w, dtype=torch.bool, device=x.device)
    ring[h // 8: h - h // 8, w // 8: w - w // 8] = False
    return centre - lum[:, ring].mean(1)


def clipped(x: torch.Tensor, margin: float = 2 / 255) -> torch.Tensor:
    """Share of channel values within ``margin`` of 0 or 1 (blown highlights, crushed shadows)."""
    return ((x <= margin) | (x >= 1 - margin)).float().flatten(1).mean(1)


def edge_density(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Share of pixels whose luminance gradient (central differences) exceeds ``threshold``: photos
    have smooth regions between edges, feature-visualization textures are busy everywhere."""
    lum = _luminance(x)
    gy = lum[:, 2:, 1:-1] - lum[:, :-2, 1:-1]
    gx = lum[:, 1:-1, 2:] - lum[:, 1:-1, :-2]
    return ((gx.pow(2) + gy.pow(2)).sqrt() / 2 > threshold).float().flatten(1).mean(1)


def hfer(x: torch.Tensor) -> torch.Tensor:
    """Share of luminance spectral energy above 0.25 cycles/pixel (the guide's HFER)."""
    return high_frequency_energy(x)


STATISTICS = {"colourfulness": colourfulness, "saturation": saturation, "centre_brightness": centre_brightness,
              "clipped": clipped, "edge_density": edge_density, "hfer": hfer}


@lru_cache(maxsize=1)
def photo_ranges() -> dict[str, tuple[float, float]]:
    """``{statistic: (low, high)}`` measured on the offline photos (shipped with fvis); only the
    statistics that separate photos from plain logit renders are listed."""
    data = json.loads((files("fvis") / "data" / "naturalness.json").read_text())
    return {k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}


@torch.no_grad()
def naturalness(images: torch.Tensor, ranges: dict | None = None) -> list[dict]:
    """Per image: every kept statistic, and ``natural_in_range`` = how many of them lie inside the
    photos' range, out of ``natural_total``. ``images``: ``(B, 3, H, W)`` in [0, 1]."""
    ranges = photo_ranges() if ranges is None else ranges
    x = images.float().cpu()
    values = {name: STATISTICS[name](x) for name in ranges}
    rows = []
    for i in range(x.shape[0]):
        row = {name: float(v[i]) for name, v in values.items()}
        inside = sum(lo <= row[name] <= hi for name, (lo, hi) in ranges.items())
        rows.append({**row, "natural_in_range": inside, "natural_total": len(ranges)})
    return rows
