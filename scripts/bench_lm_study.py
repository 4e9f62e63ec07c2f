"""Language-model studies on SmolLM2-135M, 3-token prompts (results/lm/).

(a) ``--part throughput`` (timed: run it on a quiet core): successful prompts per minute, many
    targets in one batch (:func:`fvis.lm.invert_many`, every (target, restart) pair one item, each
    finishing on its own success) against one target at a time (:func:`fvis.lm.invert`, one
    restart, stop on success), the same targets and the same per-item budget in *steps* (so the
    search effort per item, and hence the success rate, is the same; wall time is what differs).
    The two modes alternate within a run; each run appends to ``throughput.json`` (pieces) and
    ``throughput.md`` summarizes every piece.
(b) ``--part study``: ``study.md`` from an ``fvis lm-study`` folder (its counts and top tokens).

    python scripts/bench_lm_study.py --part throughput --targets 8 --steps 30 --rounds 1
    python scripts/bench_lm_study.py --part study --study results/lm/study_girl_boy
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from fvis.lm import invert, invert_many, load_lm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_invert import words  # noqa: E402  (the same common-word targets as the invert benchmark)


def sequential(lm, targets, steps, seed):
    t0 = time.perf_counter()
    ok = []
    for t in targets:
        inv = invert(lm, t, length=3, restarts=1, steps=steps, time_limit=None, seed=seed, progress=False)
        ok.append(bool(inv.best.success))
    return {"mode": "sequential", "items": len(targets), "successes": sum(ok), "seconds": time.perf_counter() - t0}


def batched(lm, targets, steps, seed, restarts):
    t0 = time.perf_counter()
    runs = invert_many(lm, targets, length=3, restarts=restarts, steps=steps, time_limit=None, seed=seed,
                       progress=False, each=True)
    found = {(r.settings["target"], e.text) for r in runs for e in r.restarts if e.success}
    return {"mode": "batched", "items": len(targets) * restarts, "successes": len(found),
            "seconds": time.perf_counter() - t0, "restarts": restarts}


def throughput(args):
    lm = load_lm("smollm2-135m")
    targets = words(lm, args.targets, args.seed)
    path = args.out / "throughput.json"
    data = json.loads(path.read_text()) if path.exists() else {"pieces": []}
    cmd = "python scripts/bench_lm_study.py " + shlex.join(sys.argv[1:])
    piece = {"command": cmd, "targets": targets, "steps": args.steps, "threads": torch.get_num_threads(),
             "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": []}
    for k in range(args.rounds):
        seed = args.seed + k + 100 * len(data["pieces"])
        order = ["sequential", "batched"] if (k + len(data["pieces"])) % 2 == 0 else ["batched", "sequential"]
        for mode in order:
            r = sequential(lm, targets, args.steps, seed) if mode == "sequential" else \
                batched(lm, targets, args.steps, seed, args.restarts)
            r["round"], r["seed"] = k, seed
            r["per_minute"] = 60 * r["successes"] / r["seconds"]
            piece["rounds"].append(r)
            print(json.dumps(r), flush=True)
    data["pieces"].append(piece)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    rows = [r for p in data["pieces"] for r in p["rounds"]]
    lines = ["# Batched many-target inversion vs one target at a time (SmolLM2-135M, 3-token prompts, CPU)", "",
             "Each piece: `" + "`, `".join(p["command"] for p in data["pieces"]) + "`.", "",
             f"Targets: {', '.join(repr(t) for t in data['pieces'][-1]['targets'])}; per item at most "
             f"{data['pieces'][-1]['steps']} steps (embed method, defaults otherwise), torch threads "
             f"{data['pieces'][-1]['threads']}, one pinned core; the modes alternate.", "",
             "| round | mode | items | successes | success rate | seconds | successful prompts / min |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for p, piece_ in enumerate(data["pieces"]):
        for r in piece_["rounds"]:
            lines.append(f"| {p}.{r['round']} | {r['mode']} | {r['items']} | {r['successes']} | "
                         f"{r['successes'] / r['items']:.2f} | {r['seconds']:.0f} | {r['per_minute']:.2f} |")
    summary = {}
    for mode in ("sequential", "batched"):
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {"items": sum(r["items"] for r in mine), "successes": sum(r["successes"] for r in mine),
                         "seconds": sum(r["seconds"] for r in mine),
                         "median_per_minute": statistics.median(r["per_minute"] for r in mine)}
    s, b = summary["sequential"], summary["batched"]
    ratio = (60 * b["successes"] / b["seconds"]) / max(60 * s["successes"] / s["seconds"], 1e-9)
    lines += ["", f"Overall: sequential {s['successes']}/{s['items']} in {s['seconds']:.0f} s "
              f"({60 * s['successes'] / s['seconds']:.2f}/min); batched {b['successes']}/{b['items']} in "
              f"{b['seconds']:.0f} s ({60 * b['successes'] / b['seconds']:.2f}/min): **{ratio:.2f}x** "
              "(target: >= 3x at equal success)."]
    (args.out / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def study(args):
    data = json.loads((args.study / "tokens.json").read_text())
    s = data["settings"]
    cmd = (f"fvis lm-study --model {s['model']} " + " ".join(f"--target {shlex.quote(t)}" for t in data["targets"])
           + f" --prompts {s['prompts']} --restarts {s['restarts']} --time-limit {s['time_limit']:g} "
           f"--patience {s['patience']} --out {args.study}")
    lines = [f"# Prompt study: {' vs '.join(repr(t) for t in data['targets'])} (SmolLM2-135M, 3-token prompts)", "",
             f"`{cmd}` (not timed; core 1, shared with other jobs): {data['rounds']} optimization run(s) over the "
             f"study's resumptions, the last one {data['seconds']:.0f} s.", ""]
    for t, entry in data["targets"].items():
        lines += [f"## {t!r}: {entry['prompts']} successful prompts (wanted {s['prompts']})", "",
                  f"Baseline: {entry['baseline']} ({entry['baseline_tokens']} tokens); prior {entry['prior']:g}.", "",
                  "| rank | token | count | baseline count | log-odds | z |", "|---:|---|---:|---:|---:|---:|"]
        for i, r in enumerate(entry["ranked"][:args.top], 1):
            lines.append(f"| {i} | `{r['token']!r}` | {r['count']} | {r['baseline_count']} | {r['delta']:.2f} | "
                         f"{r['z']:.2f} |")
        lines += ["", "Example prompts: " + ", ".join(f"`{p['text']!r}`" for p in data["prompts"][t][:8]), ""]
    (args.out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["throughput", "study"], required=True)
    ap.add_argument("--targets", type=int, default=8, help="common-word targets (throughput)")
    ap.add_argument("--restarts", type=int, default=1, help="restarts per target in the batch (throughput)")
    ap.add_argument("--steps", type=int, default=30, help="steps per item (throughput)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds in this piece (throughput)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--study", type=Path, default=Path("results/lm/study_girl_boy"))
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("results/lm"))
    args = ap.parse_args(argv)
    (throughput if args.part == "throughput" else study)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
