"""Prompt-inversion benchmark: embed+snap vs GCG on SmolLM2-135M, prompt length 3, equal wall time.

Target sets (seeded): (a) planted: the model's own greedy next token after random 3-token
prompts of allowed tokens (a solution exists); (b) common English words (single tokens with a
leading space). Success = greedy next token equals the target on the decoded, re-tokenized prompt.

    python scripts/bench_invert.py --targets 12 --time-limit 30 --out results/invert
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

WORDS = ["house", "water", "dog", "music", "money", "green", "people", "city", "food", "family", "school",
         "world", "light", "book", "car", "game", "friend", "love", "night", "heart", "war", "king", "river",
         "tree", "summer", "health", "bank", "computer", "coffee", "door", "garden", "horse", "paper", "phone",
         "church", "winter", "doctor", "island", "window", "bread"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def planted(lm, n: int, seed: int) -> list[str]:
    from fvis.lm import planted_targets

    return planted_targets(lm, n, seed)


def words(lm, n: int, seed: int) -> list[str]:
    ok = [" " + w for w in WORDS if len(lm.encode(" " + w)) == 1]
    g = torch.Generator().manual_seed(seed)
    return [ok[i] for i in torch.randperm(len(ok), generator=g)[:n].tolist()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=12, help="targets per set")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per target per method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--methods", default="embed,gcg")
    ap.add_argument("--sets", default="planted,common words", help="comma-separated: planted, common words")
    ap.add_argument("--out", type=Path, default=Path("results/invert"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fvis.invert import invert
    from fvis.lm import load_lm

    lm = load_lm("smollm2-135m")
    wanted = [w.strip() for w in args.sets.split(",")]
    makers = {"planted": planted, "common words": words}
    sets = {name: makers[name](lm, args.targets, args.seed) for name in wanted}
    rows, runs = [], []
    for set_name, targets in sets.items():
        for method in args.methods.split(","):
            results = []
            for t in targets:
                inv = invert(lm, t, method=method, length=3, steps=10**6, time_limit=args.time_limit,
                             seed=args.seed, progress=False)
                b = inv.best
                rec = {"set": set_name, "method": method, "target": t, "success": b.success,
                       "roundtrip": b.roundtrip, "prompt": b.text, "ids": b.ids, "p_target": b.p_target,
                       "rank": b.rank, "perplexity": b.perplexity, "contains_target": b.contains_target,
                       "seconds_to_success": inv.seconds_to_success if b.success else None,
                       "seconds": inv.seconds, "steps": inv.steps, "settings": inv.settings}
                results.append(rec)
                runs.append(rec)
                print(f"{set_name:12s} {method:5s} {t!r:14s} {'OK ' if b.success else 'no '} p={b.p_target:.3f} "
                      f"{b.text!r} {inv.seconds:.1f}s", flush=True)
            k = sum(r["success"] for r in results)
            lo, hi = wilson(k, len(results))
            secs = [r["seconds_to_success"] for r in results if r["success"] and r["seconds_to_success"] is not None]
            rows.append({"set": set_name, "method": method, "n": len(results), "success": k, "rate": k / len(results),
                         "ci95": [lo, hi], "median_s": statistics.median(secs) if secs else None,
                         "max_s": max(secs) if secs else None})
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "python scripts/bench_invert.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"# Prompt inversion: embed+snap vs GCG (SmolLM2-135M, 3-token prompts)", "",
             f"`{cmd}` — {args.targets} targets per set, {args.time_limit:g} s per target per method "
             f"(equal wall time), seed {args.seed}, torch threads {torch.get_num_threads()}, "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| set | method | success | 95% interval | median s to success | max s |", "|---|---|---:|---|---:|---:|"]
    for r in rows:
        med = "–" if r["median_s"] is None else f"{r['median_s']:.1f}"
        mx = "–" if r["max_s"] is None else f"{r['max_s']:.1f}"
        lines.append(f"| {r['set']} | {r['method']} | {r['success']}/{r['n']} ({r['rate']:.2f}) | "
                     f"{r['ci95'][0]:.2f}–{r['ci95'][1]:.2f} | {med} | {mx} |")
    lines += ["", "## Example prompts", "", "| set | method | target | prompt | p(target) | success |", "|---|---|---|---|---:|---|"]
    for r in runs:
        lines.append(f"| {r['set']} | {r['method']} | `{r['target']!r}` | `{r['prompt']!r}` | {r['p_target']:.3f} | "
                     f"{'yes' if r['success'] else 'no'} |")
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    (args.out / "bench.json").write_text(json.dumps({"command": cmd, "summary": rows, "runs": runs}, indent=2,
                                                    ensure_ascii=False))
    print("\n".join(lines[:len(rows) + 6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
