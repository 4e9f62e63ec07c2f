"""Input layout across architectures: `fvis render` with channels-last input vs plain NCHW.

On the CPU fvis feeds image batches to the model in channels-last layout by default (a copy of the
input inside the autograd graph; the model's weights are never touched). This script checks that
choice beyond EfficientNet-Lite0: for each architecture it times the default recipe (class logit,
Fourier parameterization + transformation robustness, Adam) with ``channels_last=None`` (auto, the
default) against ``channels_last=False``, paired per round (ABBA order), and reports the median and
interquartile range of the per-round ratios (below 1: channels-last is faster).

Torchvision architectures are built with random weights (no download; the layout question is
about the kernels, not the weights), Lite0 with its real offline weights.

    python scripts/bench_layout.py [--models efficientnet-lite0,resnet18,...] [--batches 1,8] [--steps 6] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torchvision

import fvis
import objectives as obj
from bench_engine import fvis_step_seconds  # the engine benchmark's fvis loop (scripts/ is on sys.path)

DEFAULT_MODELS = ("efficientnet-lite0,resnet18,resnet50,convnext_tiny,mobilenet_v3_large,densenet121,"
                  "regnet_y_400mf,vgg11")


def build(name: str):
    if name.startswith("efficientnet-lite"):
        model = fvis.load(name)
    else:
        torch.manual_seed(0)
        model = fvis.models.wrap(torchvision.models.get_model(name, weights=None).eval(), name=name)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def step_seconds(model, batch: int, steps: int, channels_last: bool | None) -> float:
    return fvis_step_seconds(model, obj.class_logit(94), batch, steps, channels_last=channels_last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("results/bench_layout.md"))
    args = ap.parse_args()
    if args.rounds < 2 or args.steps < 1:
        ap.error("need --rounds >= 2 and --steps >= 1")
    fvis.tune_allocator()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for name in args.models.split(","):
        model = build(name)
        for batch in batches:
            step_seconds(model, batch, 2, None)  # warm-up both layouts
            step_seconds(model, batch, 2, False)
            pairs = []
            for r in range(args.rounds):
                order = (None, False) if r % 2 == 0 else (False, None)
                t = {cl: step_seconds(model, batch, args.steps, cl) for cl in order}
                pairs.append((t[False], t[None]))
            ratios = sorted(cl / plain for plain, cl in pairs)
            q1, med, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
            plain = statistics.median(p for p, _ in pairs)
            cl = statistics.median(c for _, c in pairs)
            rows.append((name, batch, plain, cl, med, q1, q3))
            print(f"{name:<20} B{batch:<3} NCHW {plain * 1000:7.1f} ms  channels-last {cl * 1000:7.1f} ms  "
                  f"ratio {med:.3f} [IQR {q1:.3f}-{q3:.3f}]", flush=True)
    lines = [
        "# Input layout across architectures: channels-last vs NCHW in `fvis render`",
        "",
        f"Command: `python scripts/bench_layout.py --models {args.models} --batches {args.batches} "
        f"--steps {args.steps} --rounds {args.rounds}`",
        "",
        f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, 224x224, class logit 94, default "
        f"recipe (Fourier + transformation robustness + Adam). {args.rounds} rounds of {args.steps} steps, the two "
        "layouts back to back in each round (order alternating); ratio = channels-last / NCHW seconds per step, "
        "median of rounds (below 1: channels-last faster). Torchvision models with random weights, Lite0 with its "
        "real weights.",
        "",
        "| model | batch | NCHW ms/step | channels-last ms/step | ratio | IQR of rounds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {batch} | {plain * 1000:.1f} | {cl * 1000:.1f} | {med:.3f} | {q1:.3f}-{q3:.3f} |"
              for name, batch, plain, cl, med, q1, q3 in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
