"""What one optimization step of each prototype recipe costs, side by side in one process: seconds per
step at batch 20 (the 20 test classes of bench_prototype.py), from the difference of a long and a short
run (so set-up and scoring cancel), recipes alternating within each round, the median over rounds and
its ratio to the first recipe's.

    python scripts/bench_recipe_step.py [--recipes robust-blur,transparent] [--rounds 3] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import fvis
from fvis.prototype import make_prototypes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prototype import CLASSES  # noqa: E402


def step_seconds(model, recipe: str, short: int, long: int) -> float:
    times = {}
    for n in (long, short):
        start = time.perf_counter()
        make_prototypes(model, CLASSES, recipe=recipe, steps=n, heldout=0, progress=False)
        times[n] = time.perf_counter() - start
    return (times[long] - times[short]) / (long - short)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="robust-blur,transparent")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short", type=int, default=8)
    ap.add_argument("--long", type=int, default=24)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model = fvis.load("efficientnet-lite0")
    recipes = args.recipes.split(",")
    seconds: dict[str, list[float]] = {r: [] for r in recipes}
    for k in range(args.rounds):
        for r in recipes:
            seconds[r].append(step_seconds(model, r, args.short, args.long))
            print(f"round {k + 1} {r}: {seconds[r][-1]:.3f} s/step", flush=True)
    base = statistics.median(seconds[recipes[0]])
    lines = [f"Seconds per step at batch {len(CLASSES)} (EfficientNet-Lite0, 224 px, {torch.get_num_threads()} thread(s)), "
             f"({args.long} - {args.short})-step difference, {args.rounds} rounds alternating", "",
             "| recipe | per round | median | ratio |", "|---|---|---:|---:|"]
    for r in recipes:
        med = statistics.median(seconds[r])
        lines.append(f"| {r} | {', '.join(f'{s:.3f}' for s in seconds[r])} | {med:.3f} | {med / base:.2f} |")
    cmd = "python scripts/bench_recipe_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(lines) + f"\n\nCommand: `{cmd.strip()}`\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
