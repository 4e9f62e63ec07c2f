"""Every naturalness statistic of a folder of images (fvis.naturalness.STATISTICS, the kept and the
dropped ones) against the offline photos' range: the median and how many images lie inside it,
optionally after a Gaussian blur (a diagnostic of where the energy sits, not a remedy).

    python scripts/probe_naturalness.py DIR [--blur 0.5]

The photos' ranges of the dropped statistics come from results/naturalness.md's table
(scripts/naturalness_ranges.py measures them all; only the kept ones ship in fvis/data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from kornia.filters import gaussian_blur2d

from fvis.files import load_image
from fvis.naturalness import STATISTICS, photo_ranges

# photos' ranges of the statistics scripts/naturalness_ranges.py dropped (results/naturalness.md)
DROPPED = {"colourfulness": (0.128, 0.400), "centre_brightness": (-0.127, 0.360), "clipped": (0.0, 0.127)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--blur", type=float, default=0.0, help="Gaussian sigma in px applied first (0: none)")
    args = ap.parse_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
                   and p.name != "contact_sheet.png")
    x = torch.stack([load_image(p) for p in files])
    if args.blur:
        k = 2 * int(4 * args.blur) + 1
        x = gaussian_blur2d(x, (k, k), (args.blur, args.blur), border_type="reflect")
    ranges = {**photo_ranges(), **DROPPED}
    print(f"{len(files)} images in {args.folder}" + (f", blurred at sigma {args.blur}" if args.blur else ""))
    for name, fn in STATISTICS.items():
        v = fn(x)
        lo, hi = ranges[name]
        kept = "kept" if name in photo_ranges() else "dropped"
        print(f"{name:18s} ({kept:7s}) median {v.median():.3f}  in photos' range [{lo:g}, {hi:g}]: "
              f"{int(((v >= lo) & (v <= hi)).sum())}/{len(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
