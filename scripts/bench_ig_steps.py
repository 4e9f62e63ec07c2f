"""Integrated-gradients completeness gap on Lite0 by integration rule and number of path points,
on the offline photos (black baseline, the command's default), to choose a default that passes
fvis's own 5% check.

    python scripts/bench_ig_steps.py [--runs gausslegendre:64,gausslegendre:128,trapezoid:128,...]

Writes results/explain/ig_steps.md: per (rule, steps) the relative gap |sum(attr) - (f(x) - f(x0))|
/ |f(x) - f(x0)| per photo, its maximum and the seconds per image.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

import fvis
from fvis.attribution import integrated_gradients

sys.path.insert(0, str(Path(__file__).parent))
from photos import LABELS, offline_photos  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="gausslegendre:32,gausslegendre:64,gausslegendre:128,gausslegendre:256,"
                   "trapezoid:128,trapezoid:256", help="rule:steps pairs, comma-separated")
    p.add_argument("--out", default="results/explain/ig_steps.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = fvis.load("efficientnet-lite0")
    photos = {n: F.center_crop(F.resize(im, [224], antialias=True), [224, 224]).clamp(0, 1)
              for n, im in offline_photos().items()}
    names = list(photos)
    x = torch.stack([photos[n] for n in names])
    rows = []
    for run in args.runs.split(","):
        method, steps = run.split(":")
        steps = int(steps)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = integrated_gradients(model, x, steps=steps, method=method, progress=False)
        sec = (time.perf_counter() - t0) / len(names)
        gaps = a.info["relative_gap"].tolist()
        rows.append((method, steps, gaps, sec))
        print(f"{method:>13} {steps:>4}: max gap {max(gaps):.2%}  ({sec:.1f} s/image)", flush=True)
    lines = ["# Integrated gradients: completeness gap by rule and path points", "",
             f"Command: `python {' '.join(sys.argv)}` (EfficientNet-Lite0, black baseline, top-1 class; "
             "the 7 offline photos resized to 224 and centre-cropped; one CPU core shared with other jobs, "
             "so seconds are rough).", "",
             "Relative gap = |sum(attribution) - (f(x) - f(black))| / |f(x) - f(black)|; fvis warns above 5%.", "",
             "| rule | steps | " + " | ".join(f"{n} ({LABELS.get(n, 'top-1')})" for n in names) + " | max | s/image |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for method, steps, gaps, sec in rows:
        lines.append(f"| {method} | {steps} | " + " | ".join(f"{g:.2%}" for g in gaps)
                     + f" | **{max(gaps):.2%}** | {sec:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
