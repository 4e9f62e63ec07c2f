"""How fast a short prototype run raises its class, per recipe (issue 17: the log-odds recipe starts slower).

    python scripts/probe_slow_start.py [--recipes transparent,log-odds] [--steps 24,48,64,96,128] [--out FILE.md]

Lite0, hummingbird, 128 px, seed 0, one thread: clean p of the result after each step count (separate runs).
Also, from per-prototype JSONs given with ``--histories DIR`` (e.g. a ``tune_prototype.py`` output), the first
step at which the recorded log-odds was above 0 (p > 0.5 under the training transforms).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import fvis
from fvis.prototype import make_prototypes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="transparent,log-odds")
    ap.add_argument("--steps", default="24,48,64,96,128")
    ap.add_argument("--histories", type=Path, action="append", default=[], metavar="DIR")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = fvis.load("efficientnet-lite0")
    steps = [int(s) for s in args.steps.split(",")]
    lines = ["Command: `python scripts/probe_slow_start.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             "Clean p(hummingbird) of Lite0 prototypes, 128 px, seed 0, after N steps (separate runs):", "",
             "| recipe | " + " | ".join(map(str, steps)) + " |", "|---|" + "---:|" * len(steps)]
    for name in args.recipes.split(","):
        ps = [make_prototypes(model, ["hummingbird"], recipe=name, steps=n, size=128, heldout=0, progress=False)[0]
              for n in steps]
        lines.append(f"| {name} | " + " | ".join(f"{p.metrics['clean_p']:.3f}" for p in ps) + " |")
    for folder in args.histories:
        firsts = {}
        for f in sorted(folder.glob("*.json")):
            record = json.loads(f.read_text())
            if "log_odds" in record.get("history", {}):
                firsts[record["name"]] = next((i for i, v in enumerate(record["history"]["log_odds"]) if v > 0), None)
        if firsts:
            done = [v for v in firsts.values() if v is not None]
            lines += ["", f"`{folder.name}`: first step with log-odds > 0, per prototype: "
                      + ", ".join(f"{k} {v}" for k, v in firsts.items())
                      + (f" (median {statistics.median(done):g})" if done else "")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
