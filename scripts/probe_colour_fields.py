"""Two more candidate naturalness statistics against the offline photos, for the large smooth colour fields of the
default's prototypes (issue 17): the luminance power spectrum's slope (photos fall off as about 1/f^2 or
steeper; textures are flatter) and the share of flat, saturated pixels (luminance std under 0.03 in a 9 px window
and HSV saturation above 0.3). Prints each folder's median and how many of its images lie inside the range of
the 42 photo crops (scripts/photos.py). A probe: neither statistic is in fvis.naturalness.

    python scripts/probe_colour_fields.py NAME=DIR [NAME=DIR ...]     # DIR: PNG images, e.g. a bench's blind/robust/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fvis.files import load_image
from photos import photo_crops
from regularizers import luminance


def spectral_slope(x: torch.Tensor, lowest: int = 4) -> torch.Tensor:
    """``(B, 3, H, W) -> (B,)``: minus the slope of log power against log frequency (cycles per image, from
    ``lowest`` to half the shorter side), luminance under a Hann window, radially averaged."""
    lum = luminance(x)[:, 0]
    lum = lum - lum.mean((1, 2), keepdim=True)
    h, w = lum.shape[-2:]
    window = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None]
    power = torch.fft.fftshift(torch.fft.fft2(lum * window).abs() ** 2, dim=(-2, -1))
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy ** 2 + xx ** 2).float().sqrt().round().long()
    freqs = torch.arange(lowest, min(h, w) // 2)
    rings = torch.stack([power[:, radius == f].mean(1) for f in freqs], 1)  # (B, F)
    design = torch.stack([freqs.float().log(), torch.ones(len(freqs))], 1)
    fit = torch.linalg.lstsq(design.expand(len(x), -1, -1), rings.log()[..., None]).solution
    return -fit[:, 0, 0]


def flat_saturated(x: torch.Tensor, window: int = 9, flat: float = 0.03, saturated: float = 0.3) -> torch.Tensor:
    """``(B, 3, H, W) -> (B,)``: share of pixels whose luminance std in a ``window`` px square is under ``flat``
    and whose HSV saturation is above ``saturated``."""
    lum = luminance(x)
    mean = F.avg_pool2d(lum, window, 1, window // 2, count_include_pad=False)
    var = F.avg_pool2d(lum * lum, window, 1, window // 2, count_include_pad=False) - mean ** 2
    hi, lo = x.amax(1), x.amin(1)
    sat = (hi - lo) / hi.clamp_min(1e-6)
    return ((var.clamp_min(0).sqrt()[:, 0] < flat) & (sat > saturated)).float().flatten(1).mean(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", metavar="NAME=DIR")
    args = ap.parse_args(argv)
    photos = torch.stack(list(photo_crops().values()))
    sets = {}
    for item in args.folders:
        name, _, folder = item.partition("=")
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == ".png" and p.name != "contact_sheet.png")
        sets[name] = torch.stack([load_image(p) for p in files])
    print("| statistic | photos (42 crops): range, median | " + " | ".join(f"{n}: median, in range" for n in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    for fn in (spectral_slope, flat_saturated):
        ref = fn(photos)
        lo, hi = float(ref.min()), float(ref.max())
        cells = []
        for x in sets.values():
            v = fn(x)
            cells.append(f"{float(v.median()):.3f}, {int(((v >= lo) & (v <= hi)).sum())}/{len(v)}")
        print(f"| {fn.__name__} | {lo:.3f}–{hi:.3f}, {float(ref.median()):.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
