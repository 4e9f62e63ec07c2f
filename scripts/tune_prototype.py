"""A recipe setting tried on tuning classes (issue 17; default: the 8 tuning classes, ``--classes`` others):
Lite0 prototypes, Lite1 + Lite2 judging, per-class metrics and the medians of the naturalness statistics;
saves the prototypes (PNG + JSON, a contact sheet) for a blind viewer.

    python scripts/tune_prototype.py --steps 400 --set decay_power=1.5 --out /tmp/t_dp15

Every ``--set key=value`` is a recipe field (numbers and lists parsed as JSON); ``--recipe`` names the
recipe they change (default: the default recipe).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import fvis
from fvis.prototype import make_prototypes, save_prototypes
from fvis.recipes import DEFAULT
from bench_prototype import TUNED, setting_value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=DEFAULT)
    ap.add_argument("--set", action="append", default=[], metavar="key=value", help="override one recipe field")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--classes", default=",".join(map(str, TUNED)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    settings = {key: setting_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    model = fvis.load("efficientnet-lite0")
    evaluators = [fvis.load("efficientnet-lite1"), fvis.load("efficientnet-lite2")]
    start = time.time()
    protos = make_prototypes(model, [int(c) for c in args.classes.split(",")], steps=args.steps, recipe=args.recipe,
                             seed=args.seed, evaluators=evaluators, progress=False, **settings)
    save_prototypes(protos, args.out)
    keys = ("clean_p", "transfer", "transfer_heldout", "transfer_unseen")
    stats = ("saturation", "edge_density", "hfer")
    print(f"{args.recipe} {settings} {args.steps} steps, {time.time() - start:.0f} s")
    for p in protos:
        n = p.metrics["naturalness"]
        print(f"{p.name[:18]:18s}", " ".join(f"{p.metrics.get(k) or 0:.2f}" for k in keys),
              " ".join(f"{k}={n[k]:.3f}" for k in stats if k in n))
    for k in keys:
        print(f"mean {k} {statistics.mean(p.metrics.get(k) or 0 for p in protos):.3f}")
    for k in (*stats, "natural_in_range"):
        print(f"median {k} {statistics.median(p.metrics['naturalness'][k] for p in protos):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
