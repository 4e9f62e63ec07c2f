"""``--fold`` across architectures: what fvis/fold.py rewrites, whether the copy is used, how far its
input gradient is from the model's own, and the step time of a forward+backward with and without it.

Offline, only EfficientNet-Lite has pretrained weights here, so the torchvision architectures run with
random weights and BatchNorm running statistics drawn at random (mean in [-0.5, 0.5], variance in
[0.5, 2]) so that the folds are not identities. Gradient columns: the relative L2 distance of the
folded copy's input gradient (logit 3, batch 2, 224², float32) from the model's own, next to the
float32 model's own distance from the same model in float64: a fold is as exact as float32 when the
two are of a size (random-weight models can be badly conditioned: GoogLeNet's float32 gradient is
about half its own size away from its float64 one; SqueezeNet's gradient is zero, all its ReLUs dead).
Time: ``bench_engine.py``'s bare loop (logit 3, batch 1, fvis's starting image, channels-last input)
on the model and on the folded copy, paired as there (blocks back to back, order alternating),
median per-round ratio.

    python scripts/bench_fold.py [--rounds 5] [--steps 3] [--out results/bench_fold.md]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn

import fvis
from fvis import fold as F
from fvis.hooks import frozen, inference_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import bare_step_seconds, paired  # noqa: E402  (the same timed loop and pairing)

ARCHS = ["efficientnet-lite0", "resnet18", "resnet50", "mobilenet_v3_large", "densenet121", "regnet_y_400mf",
         "convnext_tiny", "vgg11_bn", "efficientnet_b0", "shufflenet_v2_x1_0", "googlenet", "inception_v3",
         "mnasnet1_0", "squeezenet1_1"]


def build(name: str):
    if name.startswith("efficientnet-lite"):
        return fvis.load(name), "pretrained"
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    net = getattr(torchvision.models, name)(weights=None, **kw)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return fvis.wrap(net, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], input_size=224, name=name), "random"


def grad(model, x, dtype=torch.float32):
    xi = x.to(dtype).clone().requires_grad_()
    model(xi)[:, 3].sum().backward()
    return xi.grad.double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/bench_fold.md"))
    args = ap.parse_args()
    torch.manual_seed(0)
    fvis.tune_allocator()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in ARCHS:
        model, weights = build(name)
        with frozen(model):
            what = F.plan(copy.deepcopy(model))
            folded = inference_copy(model, ["output"], x[:1])
            g32, g_fold = grad(model, x), grad(folded, x)
            g64 = grad(copy.deepcopy(model).double(), x, torch.float64)
            fold_rel = float((g_fold - g32).norm() / g32.norm())
            f32_rel = float((g32 - g64).norm() / g64.norm())
            pairs = paired(args.steps, args.rounds,
                           *[lambda n, m=m: bare_step_seconds(m, 1, n, 224, target_class=3, channels_last=True)
                             for m in (model, folded)])
        ratio = statistics.median(f / p for p, f in pairs)
        plain = statistics.median(p for p, _ in pairs)
        fast = statistics.median(f for _, f in pairs)
        rows.append((name, weights, len(what.batchnorms), len(what.pads), len(what.inplace), folded is not model,
                     fold_rel, f32_rel, plain, fast, ratio))
        print(f"{name:<20} {rows[-1][2:6]} grad fold {fold_rel:.2e} fp32 {f32_rel:.2e} "
              f"{plain * 1e3:.1f} -> {fast * 1e3:.1f} ms ({ratio:.3f})", flush=True)
    command = " ".join(["python scripts/bench_fold.py", *sys.argv[1:]])
    lines = ["# `--fold` across architectures", "", f"Command: `{command}`", "",
             f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU, {torch.get_num_threads()} thread(s). "
             + __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| model | weights | BatchNorms folded | pads folded | in place | copy used | input gradient: fold vs own | "
             "own float32 vs float64 | step ms plain | step ms folded | folded / plain (median of rounds) |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {w} | {b} | {p} | {i} | {'yes' if u else 'no'} | {fr:.1e} | {f32:.1e} | {pl * 1e3:.1f} | "
              + (f"{fa * 1e3:.1f} | {ra:.3f} |" if u else "— (the model itself) | — |")
              for n, w, b, p, i, u, fr, f32, pl, fa, ra in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
