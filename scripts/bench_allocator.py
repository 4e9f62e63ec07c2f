"""What fvis.tune_allocator() (applied by the `fvis` command line) buys on CPU.

Each round starts two fresh worker processes back to back (order alternating), one with glibc's
malloc defaults and one after ``fvis.tune_allocator()``; each worker times a bare Lite0
forward+backward and an fvis render (default recipe, class logit) at the given batch with the
engine benchmark's own loops (``bench_engine.bare_step_seconds`` / ``fvis_step_seconds``: the
render's steps alone), and reports seconds per step and the system CPU time per step of each
block (page faults show up there; the render's set-up is included in that one).

    python scripts/bench_allocator.py [--batch 1 8] [--steps 10] [--rounds 5] [--out results/bench_allocator.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, os, sys
import fvis, objectives as obj
mode, batch, steps, scripts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tuned = fvis.tune_allocator() if mode == "tuned" else False
sys.path.insert(0, scripts)
from bench_engine import bare_step_seconds, fvis_step_seconds  # the same two loops as the engine benchmark
model = fvis.load("efficientnet-lite0")
for p in model.parameters():
    p.requires_grad_(False)
def timed(fn):  # (seconds per step, system CPU seconds per step)
    s = os.times().system
    return fn(), (os.times().system - s) / steps
bare_step_seconds(model, batch, 2)  # warm-up both loops
fvis_step_seconds(model, obj.class_logit(94), batch, 2)
b = timed(lambda: bare_step_seconds(model, batch, steps))
f = timed(lambda: fvis_step_seconds(model, obj.class_logit(94), batch, steps))
print(json.dumps({"tuned": tuned, "bare": b, "fvis": f}))
"""


def run(mode: str, batch: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, str(batch), str(steps), str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("results/bench_allocator.md"))
    args = ap.parse_args()

    lines = ["# CPU allocator: glibc defaults vs fvis.tune_allocator()", "",
             f"Command: `python scripts/bench_allocator.py --batch {' '.join(map(str, args.batch))} "
             f"--steps {args.steps} --rounds {args.rounds}`", "",
             f"EfficientNet-Lite0, 224x224, CPU; {args.rounds} rounds, each a fresh process per setting "
             "(order alternating); medians over rounds; fvis = `fvis render`'s steps alone. sys = system CPU "
             "time per step (for fvis including the render's set-up).", "",
             "| batch | loop | default ms/step | tuned ms/step | tuned / default | default sys ms/step | tuned sys ms/step |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for batch in args.batch:
        results = {"default": [], "tuned": []}
        for r in range(args.rounds):
            for mode in (("default", "tuned") if r % 2 == 0 else ("tuned", "default")):
                res = run(mode, batch, args.steps)
                if mode == "tuned" and not res["tuned"]:
                    raise SystemExit("fvis.tune_allocator() does not apply on this machine")
                results[mode].append(res)
        for loop in ("bare", "fvis"):
            d = statistics.median(x[loop][0] for x in results["default"])
            t = statistics.median(x[loop][0] for x in results["tuned"])
            ds = statistics.median(x[loop][1] for x in results["default"])
            ts = statistics.median(x[loop][1] for x in results["tuned"])
            label = "bare forward+backward" if loop == "bare" else "fvis render (default recipe)"
            print(f"batch {batch} {label:<30} default {d * 1000:7.1f} ms  tuned {t * 1000:7.1f} ms  "
                  f"ratio {t / d:.3f}  sys {ds * 1000:.0f} -> {ts * 1000:.0f} ms", flush=True)
            lines.append(f"| {batch} | {label} | {d * 1000:.1f} | {t * 1000:.1f} | {t / d:.3f} | "
                         f"{ds * 1000:.0f} | {ts * 1000:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
