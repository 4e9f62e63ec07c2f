"""Engine overhead benchmark: seconds per step of fvis rendering vs a bare forward+backward.

Measured side by side in one run on EfficientNet-Lite0 at 224x224, weights frozen in both
(a feature-visualization step never needs weight gradients), rounds interleaved, medians
reported. fvis runs its default recipe: Fourier parameterization + transformation robustness.

    python scripts/bench_engine.py [--steps 20] [--rounds 7] [--out results/bench_engine.md]
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


def fvis_step_seconds(model, objective, batch: int, steps: int, transforms: bool = True) -> float:
    result = render(model, [objective] * batch, steps=steps, transforms=transforms, progress=False)
    return result.seconds_per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("results/bench_engine.md"))
    args = ap.parse_args()

    model = fvis.load("efficientnet-lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    cases = [  # (label, objective, batch, transforms)
        ("(a) class logit, batch 1", obj.class_logit(94), 1, True),
        ("(a) class logit, batch 8", obj.class_logit(94), 8, True),
        ("(a) class logit, batch 1, --no-transforms", obj.class_logit(94), 1, False),
        ("(a) class logit, batch 8, --no-transforms", obj.class_logit(94), 8, False),
        ("(b) channel _blocks.1:3 (early), batch 1", obj.channel("_blocks.1", 3), 1, True),
        ("(b) channel _blocks.1:3 (early), batch 8", obj.channel("_blocks.1", 3), 8, True),
    ]
    rows = []
    for label, objective, batch, transforms in cases:
        bare_step_seconds(model, batch, 2)  # warm-up both paths
        fvis_step_seconds(model, objective, batch, 2, transforms)
        bare, ours = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            bare.append(bare_step_seconds(model, batch, args.steps))
            ours.append(fvis_step_seconds(model, objective, batch, args.steps, transforms))
        b, f = statistics.median(bare), statistics.median(ours)
        rows.append((label, b, f, f / b))
        print(f"{label:<44} bare {b * 1000:8.1f} ms/step   fvis {f * 1000:8.1f} ms/step   ratio {f / b:.3f}", flush=True)

    lines = [
        "# Engine overhead: fvis render vs bare forward+backward",
        "",
        f"Command: `python scripts/bench_engine.py --steps {args.steps} --rounds {args.rounds}`",
        "",
        f"EfficientNet-Lite0, 224x224, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}. "
        f"Median of {args.rounds} interleaved rounds of {args.steps} steps. fvis = Fourier parameterization + "
        "transformation robustness + Adam (the `fvis render` default) unless marked; bare = `model(x)[:, c].sum().backward()` "
        "on a leaf input tensor (fvis's starting image), weights frozen. Targets: (a) <= 1.05x, (b) <= 0.5x the bare full-model cost.",
        "",
        "| case | bare ms/step | fvis ms/step | fvis / bare |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {b * 1000:.1f} | {f * 1000:.1f} | {r:.3f} |" for label, b, f, r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
