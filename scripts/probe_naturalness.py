"""Every naturalness statistic of a folder of images (fvis.naturalness.STATISTICS, the kept and the
dropped ones) against the offline photos' range: the median and how many images lie inside it,
optionally after a Gaussian blur (a diagnostic of where the energy sits, not a remedy).

    python scripts/probe_naturalness.py DIR [--blur 0.5]

Kept statistics use the shipped ranges (fvis/data/naturalness.json); the dropped ones the range of the
same 42 photo crops scripts/naturalness_ranges.py measures (its table: results/naturalness.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fvis.files import load_image
from fvis.naturalness import STATISTICS, photo_ranges
from photos import photo_crops
from regularizers import gaussian_blur


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--blur", type=float, default=0.0, help="Gaussian sigma in px applied first (0: none)")
    args = ap.parse_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
                   and p.name != "contact_sheet.png")
    x = torch.stack([load_image(p) for p in files])
    if args.blur:
        x = gaussian_blur(x, torch.full((len(x),), args.blur))
    photos = torch.stack(list(photo_crops().values()))
    kept_ranges = photo_ranges()
    photo_values = {name: fn(photos) for name, fn in STATISTICS.items()}
    ranges = {name: (float(v.min()), float(v.max())) for name, v in photo_values.items()}
    ranges.update(kept_ranges)
    print(f"{len(files)} images in {args.folder}" + (f", blurred at sigma {args.blur}" if args.blur else ""))
    for name, fn in STATISTICS.items():
        v = fn(x)
        lo, hi = ranges[name]
        kept = "kept" if name in kept_ranges else "dropped"
        print(f"{name:18s} ({kept:7s}) median {v.median():.3f}  in photos' range [{lo:.4g}, {hi:.4g}]: "
              f"{int(((v >= lo) & (v <= hi)).sum())}/{len(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
