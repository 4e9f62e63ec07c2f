"""Measure the photo ranges of fvis's naturalness statistics and check that each one separates
photos from plain class-logit renders; write the kept ranges to fvis/data/naturalness.json and a
table to results/naturalness.md.

    python scripts/naturalness_ranges.py                     # renders 8 classes itself (a few minutes)
    python scripts/naturalness_ranges.py --renders DIR       # or reads PNG renders from DIR

Photos: 42 crops of the seven offline colour photographs (three scales, mirrored; scripts/photos.py).
Renders: ``fvis render``'s default recipe (Fourier + transforms, no matching) on class logits of
EfficientNet-Lite0. A statistic is kept when at least ``--keep`` (default 0.75) of the renders fall
outside the photos' range.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import fvis
from fvis.render import render
import objectives as obj
from fvis.io import list_images, load_image, write_json
from fvis.naturalness import STATISTICS
from photos import photo_crops

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [11, 130, 301, 340, 555, 963, 980, 985]  # the tuning classes, none of the prototype benchmark's


def renders(classes, steps: int, seed: int) -> torch.Tensor:
    model = fvis.load("efficientnet-lite0")
    result = render(model, [obj.class_logit(c) for c in classes], steps=steps, seed=seed, progress=False)
    return result.input


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", type=Path, help="folder of plain logit renders (PNG) instead of rendering")
    ap.add_argument("--steps", type=int, default=256, help="render steps (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, default=0.75, help="share of renders that must fall outside")
    ap.add_argument("--write", action="store_true", help="write fvis/data/naturalness.json and results/naturalness.md")
    args = ap.parse_args(argv)
    photos = torch.stack(list(photo_crops().values()))
    if args.renders:
        fakes = torch.stack([load_image(p, size=224) for p in list_images(args.renders)])
    else:
        fakes = renders(CLASSES, args.steps, args.seed)
    lines = ["| statistic | photos min | photos median | photos max | renders median | renders outside | kept |",
             "|---|---:|---:|---:|---:|---:|---|"]
    ranges = {}
    for name, fn in STATISTICS.items():
        p, f = fn(photos), fn(fakes)
        lo, hi = float(p.min()), float(p.max())
        outside = float(((f < lo) | (f > hi)).float().mean())
        kept = outside >= args.keep
        if kept:
            ranges[name] = [math.floor(lo * 1e4) / 1e4, math.ceil(hi * 1e4) / 1e4]  # outward: photos stay inside
        lines.append(f"| {name} | {lo:.3f} | {float(p.median()):.3f} | {hi:.3f} | {float(f.median()):.3f} | "
                     f"{outside:.2f} | {'yes' if kept else 'no'} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        cmd = "python scripts/naturalness_ranges.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_json({"ranges": ranges, "photos": len(photos), "renders": len(fakes), "command": cmd.strip()},
                   ROOT / "fvis" / "data" / "naturalness.json")
        (ROOT / "results" / "naturalness.md").write_text(
            f"Naturalness statistics (fvis/naturalness.py): {len(photos)} crops of the offline photos against "
            f"{len(fakes)} plain class-logit renders of EfficientNet-Lite0 ({'from ' + str(args.renders) if args.renders else f'{args.steps} steps, seed {args.seed}'}). "
            f"Kept when at least {args.keep:.0%} of the renders fall outside the photos' range.\n\n{table}\n\n"
            f"Command: `{cmd.strip()}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
