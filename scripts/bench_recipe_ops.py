"""What issue 23's operators bought: the default recipe with the plain operators it had before
(kornia's ``warp_affine`` through autograd; ``sigmoid(FourierImage._to_image(spectrum))``) vs
the current ones (one autograd node each: ``regularizers.warp``, the fused Fourier image), paired
per round in one process on EfficientNet-Lite0 at 224, the bare loop in channels-last as the base
of both ratios (as the headline row of ``scripts/bench_engine.py``). Same seed, same images: the
script checks that both give the same final image.

    python scripts/bench_recipe_ops.py [--steps 20] [--rounds 7] [--batches 1,8] [--out results/bench_recipe_ops.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fvis  # noqa: E402
import kornia  # noqa: E402
import objectives as obj  # noqa: E402
import regularizers as reg  # noqa: E402

from bench_engine import bare_step_seconds  # noqa: E402


class PlainTransforms(reg.TransformRobustness):
    """The transform before issue 23: kornia's warp_affine through autograd."""

    def transform(self, x, generator):
        b, _, h, w = x.shape
        m = self.matrices(self.sample(b, generator), (h, w), (h, w)).to(x.device, x.dtype)
        return kornia.geometry.transform.warp_affine(x - self.fill, m, (h, w), mode="bilinear",
                                                     padding_mode="zeros", align_corners=True) + self.fill


class PlainFourier(fvis.FourierImage):
    """The Fourier image before issue 23: plain autograd operators."""

    def forward(self):
        return torch.sigmoid(self._to_image(self.spectrum))


def run(model, batch: int, steps: int, plain: bool):
    image = (PlainFourier if plain else fvis.FourierImage)(224, batch=batch, seed=0)
    transforms = PlainTransforms() if plain else reg.TransformRobustness()
    return fvis.optimize(model, obj.class_logit(94), image, [transforms], steps=steps, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out", type=Path, default=Path("results/bench_recipe_ops.md"))
    args = ap.parse_args()
    fvis.tune_allocator()
    model = fvis.load("efficientnet-lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        same = torch.equal(run(model, batch, 3, True).input, run(model, batch, 3, False).input)
        bare(model, batch, 2)
        ratios = {"plain": [], "new": []}
        for r in range(args.rounds):
            order = ("plain", "new") if r % 2 == 0 else ("new", "plain")
            base = bare(model, batch, args.steps)
            for kind in order:
                ratios[kind].append(run(model, batch, args.steps, kind == "plain").seconds_per_step / base)
        gain = sorted(n / p for n, p in zip(ratios["new"], ratios["plain"]))
        row = [batch, *(statistics.median(ratios[k]) for k in ("plain", "new")), statistics.median(gain),
               *statistics.quantiles(gain, n=4, method="inclusive")[::2], same]
        rows.append(row)
        print(row, flush=True)
    lines = ["# Issue 23's operators: the default recipe before and after, paired", "",
             f"Command: `python scripts/bench_recipe_ops.py --steps {args.steps} --rounds {args.rounds} "
             f"--batches {args.batches}`", "",
             f"EfficientNet-Lite0, 224x224, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, "
             f"kornia {kornia.__version__}. Per round: a channels-last bare block, then the plain-operator and the "
             f"new-operator recipe (order alternating), {args.steps} steps each; ratios to the round's bare block; "
             "medians of rounds. \"same image\": 3 steps of each give bit-identical images.", "",
             "| batch | plain operators / bare | new operators / bare | new / plain (median) | IQR of new / plain | same image |",
             "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {b} | {p:.3f} | {n:.3f} | {g:.3f} | {q1:.3f}-{q3:.3f} | {'yes' if s else 'NO'} |"
              for b, p, n, g, q1, q3, s in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def bare(model, batch, steps):
    return bare_step_seconds(model, batch, steps, 224, channels_last=True)


if __name__ == "__main__":
    main()
