"""Engine overhead benchmark: seconds per step of fvis rendering vs a bare forward+backward.

Measured side by side in one run on EfficientNet-Lite0 (224x224 unless ``--size``), weights frozen
in both (a feature-visualization step never needs weight gradients). Each round times a block of
bare steps and a block of fvis steps back to back (order alternating, ABBA), and the ratio is
taken per round, so slow drifts of a shared machine hit both sides of a ratio alike; the table
reports medians and the interquartile range of the per-round ratios. fvis runs its default
recipe (Fourier parameterization + transformation robustness + Adam; input in channels-last
layout on the CPU, plain layout on a GPU) unless a row says otherwise.

The headline rows pair the default recipe with a bare loop that also feeds its input
channels-last: the recipe's own cost, with the layout gain taken out. The other bare loop is
what a user would write: ``model(x)[:, c].sum().backward()`` on the model as loaded, with a plain
NCHW input; "--no-channels-last" rows pair a plain-layout fvis with it.

By default both sides run with fvis's CPU allocator settings (:func:`fvis.tune_allocator`, which
the ``fvis`` command line applies); ``--allocator default`` keeps glibc's defaults for both.

Reference rows: when Lucent is importable (``pip install --no-deps torch-lucent==0.1.8``; its
``kornia<=0.4.1`` pin cannot install next to current kornia, so two names kornia has since moved
are aliased here), Lucent's own ``render_vis`` loop (its Fourier image, standard transforms and
Adam) is paired with the bare loop in the same way, on the same model, logit and batch. Lucent
never removes its hooks, so each of its blocks runs on a fresh copy of the model (copied outside
the timing); its time includes its few set-up lines (hooking, one image), under one step's cost.

``--device cuda`` (or ``--full`` on any device) also runs batch 64, the default recipe under
``--precision bf16`` and ``--compile`` against the same bare loop (bf16: the bare loop under the
same autocast), and a throughput table (:mod:`bench_throughput`: prototypes, attacks and prompt
inversion in items per second at batch 1, 8, 64, with Lucent and torchattacks side by side).

    python scripts/bench_engine.py [--steps 20] [--rounds 9] [--allocator tuned|default] [--no-lucent] [--out results/bench_engine.md]
    python scripts/bench_engine.py --device cuda --out results/bench_engine_cuda.md
    python scripts/bench_engine.py --device cpu --full --size 64 --steps 2 --rounds 2 --batches 1,2 \\
        --throughput-steps 2 --out /tmp/smoke.md      # smoke test of the GPU mode's rows
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fvis  # noqa: E402
import objectives as obj  # noqa: E402
from fvis.execution import autocast  # noqa: E402
from fvis.render import render  # noqa: E402

from bench_throughput import throughput_table  # noqa: E402


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bare_step_seconds(model, batch: int, steps: int, size: int, target_class: int = 94,
                      channels_last: bool = False, precision: str = "fp32") -> float:
    """Plain loop: fixed input -> model (with its normalization) -> logit -> backward
    (``channels_last``: the input goes in channels-last layout, as fvis feeds it on the CPU;
    ``precision``: the forward under fvis's autocast).

    The input is fvis's own starting image (CPU convolution speed depends on the input's
    values, so both sides see the same kind of image)."""
    device = next(model.parameters()).device
    x = fvis.FourierImage(size, batch=batch, seed=0)().detach().to(device).requires_grad_()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with autocast(device, precision):
            logit = model(x_in)[:, target_class]
        logit.float().sum().backward()
        x.grad = None
    sync(device)
    return (time.perf_counter() - start) / steps


def fvis_step_seconds(model, objective, batch: int, steps: int, size: int, transforms: bool = True,
                      param: str = "fourier", channels_last: bool | None = None, precision: str = "fp32",
                      compile: bool = False, fold: bool = False) -> float:
    result = render(model, [objective] * batch, size=size, steps=steps, transforms=transforms, param=param,
                    progress=False, channels_last=channels_last, precision=precision, compile=compile, fold=fold)
    return result.seconds_per_step


def import_lucent():
    """``(lucent.optvis.render, lucent.optvis.param)``, or None when Lucent is not installed or cannot run here."""
    try:
        import kornia
        import kornia.geometry.transform as kgt
        for name in ("warp_affine", "get_rotation_matrix2d"):  # top-level in the kornia Lucent pins
            if not hasattr(kornia, name):
                setattr(kornia, name, getattr(kgt, name))
        from lucent.optvis import param as lucent_param
        from lucent.optvis import render as lucent_render
    except Exception as e:  # noqa: BLE001 -- any failure just drops the reference rows
        print(f"Lucent reference rows skipped: {type(e).__name__}: {e}")
        return None
    return lucent_render, lucent_param


def lucent_step_seconds(lucent, model, classes, batch: int, steps: int, size: int) -> float:
    """Lucent's own loop for ``steps`` steps on class logits (item i: ``classes[i % len]``):
    render_vis with its defaults (standard transforms, Adam lr 0.05) and its Fourier, decorrelated image."""
    lucent_render, lucent_param = lucent
    fresh = copy.deepcopy(model)  # Lucent's hooks stay on the model it is given
    logits = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    layer = logits.replace(".", "_")  # Lucent's layer names: module path joined by "_"
    picks = torch.tensor([classes[i % len(classes)] for i in range(batch)])

    def objective(hook):
        out = hook(layer)
        return -out[torch.arange(out.shape[0]), picks.to(out.device)].sum()

    device = next(model.parameters()).device
    sync(device)
    start = time.perf_counter()
    lucent_render.render_vis(fresh, objective, param_f=lambda: lucent_param.image(size, batch=batch),
                             thresholds=(steps,), preprocess=False, progress=False, show_image=False)
    sync(device)
    return (time.perf_counter() - start) / steps


def paired(steps: int, rounds: int, base, other):
    """Per-round (base, other) seconds per step, the two blocks of a round back to back (order
    alternating); ``base(n)`` and ``other(n)`` time n steps of each side."""
    base(2)  # warm-up both paths (a compiled side compiles here)
    other(2)
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            b = base(steps)
            f = other(steps)
        else:
            f = other(steps)
            b = base(steps)
        pairs.append((b, f))
    return pairs


def folded_copy(model, size: int):
    """The checked inference copy ``fvis render --fold`` runs (:func:`fvis.hooks.inference_copy`)."""
    from fvis.hooks import frozen, inference_copy

    device = next(model.parameters()).device
    with frozen(model):
        return inference_copy(model, ["output"], fvis.FourierImage(size, batch=1, seed=0)().detach().to(device))


def cases(model, args, batches, full: bool, lucent):
    """``(label, batch, base(n), other(n))`` for every row."""
    folded = folded_copy(model, args.size)

    def bare(batch, channels_last=False, precision="fp32", net=model):
        return lambda n: bare_step_seconds(net, batch, n, args.size, channels_last=channels_last, precision=precision)

    def fv(objective, batch, **kw):
        return lambda n: fvis_step_seconds(model, objective, batch, n, args.size, **kw)

    logit, early = obj.class_logit(94), obj.channel("_blocks.1", 3)
    rows = [(f"**headline: default recipe vs a channels-last bare loop, batch {b}**", b,
             bare(b, channels_last=True), fv(logit, b)) for b in batches]
    rows += [(f"(a) class logit, batch {b} (vs the plain NCHW bare loop)", b, bare(b), fv(logit, b)) for b in batches]
    rows += [(f"(a) class logit, batch {b}, --no-channels-last", b, bare(b), fv(logit, b, channels_last=False))
             for b in batches]
    rows += [(f"(a) class logit, batch {b}, --param pixel --no-transforms (loop alone), vs channels-last bare", b,
              bare(b, channels_last=True), fv(logit, b, transforms=False, param="pixel")) for b in batches]
    rows += [(f"(b) channel _blocks.1:3 (early), batch {b}", b, bare(b), fv(early, b)) for b in batches]
    rows += [(f"(c) --fold: class logit, batch {b} (vs the plain NCHW bare loop)", b, bare(b), fv(logit, b, fold=True))
             for b in batches]
    rows += [(f"(c) --fold: class logit, batch {b}, vs a channels-last bare loop on the same folded copy "
              "(the recipe's own cost)", b, bare(b, channels_last=True, net=folded), fv(logit, b, fold=True))
             for b in batches]
    rows += [(f"(c) --fold: channel _blocks.1:3 (early), batch {b} (vs the plain NCHW bare loop)", b, bare(b),
              fv(early, b, fold=True)) for b in batches]
    if full:
        big = batches[-1]
        rows += [(f"default recipe --precision bf16 vs the bare loop under the same autocast, batch {big}", big,
                  bare(big, precision="bf16"), fv(logit, big, precision="bf16")),
                 (f"default recipe --compile vs the bare loop, batch {big}", big, bare(big), fv(logit, big, compile=True))]
    if lucent is not None:
        rows += [(f"reference: Lucent 0.1.8 render_vis, class logit, batch {b}", b, bare(b),
                  lambda n, b=b: lucent_step_seconds(lucent, model, [94], b, n, args.size)) for b in batches]
        rows += [(f"fvis default recipe vs Lucent 0.1.8 (ratio < 1: fvis faster), batch {b}", b,
                  lambda n, b=b: lucent_step_seconds(lucent, model, [94], b, n, args.size), fv(logit, b))
                 for b in batches]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda implies --full)")
    ap.add_argument("--size", type=int, default=224, help="image side (224: the model's own)")
    ap.add_argument("--batches", help="comma-separated batch sizes (default: 1,8 on the CPU, 1,8,64 with --full)")
    ap.add_argument("--full", action="store_true",
                    help="the GPU mode's rows on any device: bf16 and compile rows and the throughput table")
    ap.add_argument("--throughput-steps", type=int, default=20, help="optimization steps per throughput item")
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings for both sides (tuned: fvis.tune_allocator(), as the CLI does)")
    ap.add_argument("--no-lucent", action="store_true", help="skip Lucent's reference rows")
    ap.add_argument("--rows", help="comma-separated words: run only the rows whose label contains one "
                                   "(e.g. headline,Lucent), to split a long run into pieces")
    ap.add_argument("--out", type=Path, default=Path("results/bench_engine.md"))
    args = ap.parse_args()
    if args.rounds < 2 or args.steps < 1:
        ap.error("need --rounds >= 2 (the table reports quartiles of per-round ratios) and --steps >= 1")
    full = args.full or torch.device(args.device).type == "cuda"
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    batches = [int(b) for b in (args.batches or ("1,8,64" if full else "1,8")).split(",")]
    if args.allocator == "tuned" and not fvis.tune_allocator():
        raise SystemExit("fvis.tune_allocator() does not apply here; use --allocator default")

    model = fvis.load("efficientnet-lite0", device=args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    lucent = None if args.no_lucent else import_lucent()
    rows = []
    words = [w.strip() for w in args.rows.split(",")] if args.rows else None
    for label, batch, base, other in cases(model, args, batches, full, lucent):
        if words and not any(w in label for w in words):
            continue
        pairs = paired(args.steps, args.rounds, base, other)
        ratios = sorted(f / b for b, f in pairs)
        q1, med, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        b = statistics.median(b for b, _ in pairs)
        f = statistics.median(f for _, f in pairs)
        fastest = min(f for _, f in pairs) / min(b for b, _ in pairs)  # noise only ever adds time
        rows.append((label, b, f, med, q1, q3, fastest, ratios))
        print(f"{label:<70} base {b * 1000:7.1f} ms  timed {f * 1000:7.1f} ms  ratio {med:.3f} "
              f"[IQR {q1:.3f}-{q3:.3f}]  fastest rounds {fastest:.3f}", flush=True)

    device = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else \
        f"CPU ({torch.get_num_threads()} threads)"
    command = " ".join(["python scripts/bench_engine.py", *sys.argv[1:]])
    lines = [
        "# Engine overhead: fvis render vs bare forward+backward",
        "",
        f"Command: `{command}`",
        "",
        f"EfficientNet-Lite0, {args.size}x{args.size}, {device}, torch {torch.__version__}. {args.rounds} rounds of "
        f"{args.steps} steps; in each round a base block (the bare loop, or Lucent where the row says so) and a timed "
        "block run back to back (order alternating), and the ratio timed / base is taken per round. fvis = Fourier "
        "parameterization + transformation robustness + Adam, input fed channels-last on the CPU (the `fvis render` "
        "default; plain layout on a GPU) unless the row says otherwise; bare = `model(x)[:, c].sum().backward()` on a "
        "leaf input tensor (fvis's starting image), weights frozen, in plain NCHW layout unless the row says "
        "\"channels-last bare\" (the recipe's own cost, layout gain taken out); \"--fold\" rows run `fvis render --fold` "
        "(a checked copy of the model with BatchNorm and padding folded into its convolutions, fvis/fold.py; like every "
        "fvis row, step time without the set-up, which for --fold includes making and checking the copy once per run). "
        "Allocator (both sides): "
        + ("fvis.tune_allocator(), as the `fvis` CLI sets it" if args.allocator == "tuned" else "glibc defaults")
        + ". Targets: headline <= 1.05x on the CPU (<= 1.10x at batch 64 on a GPU); early channel (b) <= 0.35x."
        + (" Lucent rows: Lucent 0.1.8's own `render_vis` (its Fourier image, standard transforms, Adam 0.05; a "
           "fresh copy of the model per block, copied outside the timing)." if lucent else ""),
        "",
        "| case | base ms/step | timed ms/step | ratio timed / base (median of rounds) | IQR of rounds | rounds <= 1.05 | fastest / fastest base |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {label} | {b * 1000:.1f} | {f * 1000:.1f} | {med:.3f} | {q1:.3f}-{q3:.3f} | "
              f"{sum(r <= 1.05 for r in ratios)}/{len(ratios)} | {fastest:.3f} |"
              for label, b, f, med, q1, q3, fastest, ratios in rows]
    if full:
        lines += ["", *throughput_table(model, args.device, batches, args.throughput_steps, args.size,
                                        lucent, lucent_step_seconds)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
