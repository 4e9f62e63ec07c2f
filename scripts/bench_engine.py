"""Engine overhead benchmark: seconds per step of fvis rendering vs a bare forward+backward.

Measured side by side in one run on EfficientNet-Lite0 at 224x224, weights frozen in both
(a feature-visualization step never needs weight gradients). Each round times a block of
bare steps and a block of fvis steps back to back (order alternating, ABBA), and the ratio is
taken per round, so slow drifts of a shared machine hit both sides of a ratio alike; the table
reports medians and the interquartile range of the per-round ratios. fvis runs its default
recipe (Fourier parameterization + transformation robustness) unless a row says otherwise.

By default both sides run with fvis's CPU allocator settings (:func:`fvis.tune_allocator`, which
the ``fvis`` command line applies); ``--allocator default`` keeps glibc's defaults for both.

    python scripts/bench_engine.py [--steps 20] [--rounds 9] [--allocator tuned|default] [--out results/bench_engine.md]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import fvis
import objectives as obj
from fvis.render import render


def bare_step_seconds(model, batch: int, steps: int, target_class: int = 94) -> float:
    """Plain loop: fixed input -> model (with its normalization) -> logit -> backward.

    The input is fvis's own starting image (CPU convolution speed depends on the input's
    values, so both sides see the same kind of image)."""
    x = fvis.FourierImage(224, batch=batch, seed=0)().detach().requires_grad_()
    start = time.perf_counter()
    for _ in range(steps):
        model(x)[:, target_class].sum().backward()
        x.grad = None
    return (time.perf_counter() - start) / steps


def fvis_step_seconds(model, objective, batch: int, steps: int, transforms: bool = True,
                      param: str = "fourier") -> float:
    result = render(model, [objective] * batch, steps=steps, transforms=transforms, param=param, progress=False)
    return result.seconds_per_step


def paired(model, objective, batch: int, steps: int, rounds: int, transforms: bool, param: str):
    """Per-round (bare, fvis) seconds per step, the two blocks of a round back to back."""
    bare_step_seconds(model, batch, 2)  # warm-up both paths
    fvis_step_seconds(model, objective, batch, 2, transforms, param)
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            b = bare_step_seconds(model, batch, steps)
            f = fvis_step_seconds(model, objective, batch, steps, transforms, param)
        else:
            f = fvis_step_seconds(model, objective, batch, steps, transforms, param)
            b = bare_step_seconds(model, batch, steps)
        pairs.append((b, f))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings for both sides (tuned: fvis.tune_allocator(), as the CLI does)")
    ap.add_argument("--out", type=Path, default=Path("results/bench_engine.md"))
    args = ap.parse_args()
    if args.allocator == "tuned" and not fvis.tune_allocator():
        raise SystemExit("fvis.tune_allocator() does not apply here; use --allocator default")

    model = fvis.load("efficientnet-lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    cases = [  # (label, objective, batch, transforms, param)
        ("(a) class logit, batch 1", obj.class_logit(94), 1, True, "fourier"),
        ("(a) class logit, batch 8", obj.class_logit(94), 8, True, "fourier"),
        ("(a) class logit, batch 1, --no-transforms", obj.class_logit(94), 1, False, "fourier"),
        ("(a) class logit, batch 8, --no-transforms", obj.class_logit(94), 8, False, "fourier"),
        ("(a) class logit, batch 1, --param pixel --no-transforms (loop alone)", obj.class_logit(94), 1, False, "pixel"),
        ("(a) class logit, batch 8, --param pixel --no-transforms (loop alone)", obj.class_logit(94), 8, False, "pixel"),
        ("(b) channel _blocks.1:3 (early), batch 1", obj.channel("_blocks.1", 3), 1, True, "fourier"),
        ("(b) channel _blocks.1:3 (early), batch 8", obj.channel("_blocks.1", 3), 8, True, "fourier"),
    ]
    rows = []
    for label, objective, batch, transforms, param in cases:
        pairs = paired(model, objective, batch, args.steps, args.rounds, transforms, param)
        ratios = sorted(f / b for b, f in pairs)
        q1, med, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        b = statistics.median(b for b, _ in pairs)
        f = statistics.median(f for _, f in pairs)
        fastest = min(f for _, f in pairs) / min(b for b, _ in pairs)  # noise only ever adds time
        rows.append((label, b, f, med, q1, q3, fastest, ratios))
        print(f"{label:<70} bare {b * 1000:7.1f} ms  fvis {f * 1000:7.1f} ms  ratio {med:.3f} "
              f"[IQR {q1:.3f}-{q3:.3f}]  fastest rounds {fastest:.3f}", flush=True)

    lines = [
        "# Engine overhead: fvis render vs bare forward+backward",
        "",
        f"Command: `python scripts/bench_engine.py --steps {args.steps} --rounds {args.rounds} --allocator {args.allocator}`",
        "",
        f"EfficientNet-Lite0, 224x224, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}. "
        f"{args.rounds} rounds of {args.steps} steps; in each round a bare block and an fvis block run back to "
        "back (order alternating), and the ratio is taken per round. fvis = Fourier parameterization + "
        "transformation robustness + Adam (the `fvis render` default) unless the row says otherwise; "
        "bare = `model(x)[:, c].sum().backward()` on a leaf input tensor (fvis's starting image), weights "
        "frozen. Allocator (both sides): " + ("fvis.tune_allocator(), as the `fvis` CLI sets it" if args.allocator == "tuned"
                                             else "glibc defaults") + ". Targets: (a) <= 1.05x, (b) <= 0.5x the bare full-model cost.",
        "",
        "| case | bare ms/step | fvis ms/step | fvis / bare (median of rounds) | IQR of rounds | rounds <= 1.05 | fastest fvis / fastest bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {b * 1000:.1f} | {f * 1000:.1f} | {med:.3f} | {q1:.3f}-{q3:.3f} | "
              f"{sum(r <= 1.05 for r in ratios)}/{len(ratios)} | {fastest:.3f} |"
              for label, b, f, med, q1, q3, fastest, ratios in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
