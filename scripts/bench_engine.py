"""Engine overhead benchmark: seconds per step of fvis rendering vs a bare forward+backward.

Measured side by side in one run on EfficientNet-Lite0 at 224x224, weights frozen in both
(a feature-visualization step never needs weight gradients). Each round times a block of
bare steps and a block of fvis steps back to back (order alternating, ABBA), and the ratio is
taken per round, so slow drifts of a shared machine hit both sides of a ratio alike; the table
reports medians and the interquartile range of the per-round ratios. fvis runs its default
recipe (Fourier parameterization + transformation robustness, input in channels-last layout on
the CPU) unless a row says otherwise.

The bare loop is what a user would write: ``model(x)[:, c].sum().backward()`` on the model as
loaded, with a plain NCHW input. Rows marked "vs channels-last bare" pair fvis with a bare loop
that also feeds its input channels-last, so they show the recipe's own cost with the layout gain
taken out; "--no-channels-last" rows pair a plain-layout fvis with the plain bare loop.

By default both sides run with fvis's CPU allocator settings (:func:`fvis.tune_allocator`, which
the ``fvis`` command line applies); ``--allocator default`` keeps glibc's defaults for both.

Reference rows: when Lucent is importable (``pip install --no-deps torch-lucent==0.1.8``; its
``kornia<=0.4.1`` pin cannot install next to current kornia, so two names kornia has since moved
are aliased here), Lucent's own ``render_vis`` loop (its Fourier image, standard transforms and
Adam) is paired with the bare loop in the same way, on the same model, logit and batch. Lucent
never removes its hooks, so each of its blocks runs on a fresh copy of the model (copied outside
the timing); its time includes its few set-up lines (hooking, one image), under one step's cost.

    python scripts/bench_engine.py [--steps 20] [--rounds 9] [--allocator tuned|default] [--no-lucent] [--out results/bench_engine.md]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

import fvis
import objectives as obj
from fvis.render import render


def bare_step_seconds(model, batch: int, steps: int, target_class: int = 94,
                      channels_last: bool = False) -> float:
    """Plain loop: fixed input -> model (with its normalization) -> logit -> backward
    (``channels_last``: the input goes in channels-last layout, as fvis feeds it on the CPU).

    The input is fvis's own starting image (CPU convolution speed depends on the input's
    values, so both sides see the same kind of image)."""
    x = fvis.FourierImage(224, batch=batch, seed=0)().detach().requires_grad_()
    start = time.perf_counter()
    for _ in range(steps):
        x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        model(x_in)[:, target_class].sum().backward()
        x.grad = None
    return (time.perf_counter() - start) / steps


def fvis_step_seconds(model, objective, batch: int, steps: int, transforms: bool = True,
                      param: str = "fourier", channels_last: bool | None = None) -> float:
    result = render(model, [objective] * batch, steps=steps, transforms=transforms, param=param, progress=False,
                    channels_last=channels_last)
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


def lucent_step_seconds(lucent, model, target_class: int, batch: int, steps: int) -> float:
    """Lucent's own loop for ``steps`` steps on a class logit: render_vis with its defaults
    (standard transforms, Adam lr 0.05) and its Fourier, decorrelated image at 224."""
    lucent_render, lucent_param = lucent
    fresh = copy.deepcopy(model)  # Lucent's hooks stay on the model it is given
    logits = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    layer = logits.replace(".", "_")  # Lucent's layer names: module path joined by "_"

    def objective(hook):
        return -hook(layer)[:, target_class].mean()

    start = time.perf_counter()
    lucent_render.render_vis(fresh, objective, param_f=lambda: lucent_param.image(224, batch=batch),
                             thresholds=(steps,), preprocess=False, progress=False, show_image=False)
    return (time.perf_counter() - start) / steps


def paired(model, batch: int, steps: int, rounds: int, step_seconds, bare_channels_last: bool = False):
    """Per-round (bare, timed) seconds per step, the two blocks of a round back to back;
    ``step_seconds(n)`` times the other side (fvis rendering, or Lucent's loop) over n steps."""
    def bare(n):
        return bare_step_seconds(model, batch, n, channels_last=bare_channels_last)
    bare(2)  # warm-up both paths
    step_seconds(2)
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            b = bare(steps)
            f = step_seconds(steps)
        else:
            f = step_seconds(steps)
            b = bare(steps)
        pairs.append((b, f))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings for both sides (tuned: fvis.tune_allocator(), as the CLI does)")
    ap.add_argument("--no-lucent", action="store_true", help="skip Lucent's reference rows")
    ap.add_argument("--out", type=Path, default=Path("results/bench_engine.md"))
    args = ap.parse_args()
    if args.rounds < 2 or args.steps < 1:
        ap.error("need --rounds >= 2 (the table reports quartiles of per-round ratios) and --steps >= 1")
    if args.allocator == "tuned" and not fvis.tune_allocator():
        raise SystemExit("fvis.tune_allocator() does not apply here; use --allocator default")

    model = fvis.load("efficientnet-lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    def fvis_case(label, objective, batch, transforms=True, param="fourier", channels_last=None, bare_cl=False):
        return label, batch, lambda n: fvis_step_seconds(model, objective, batch, n, transforms, param, channels_last), bare_cl

    logit = obj.class_logit(94)
    cases = [  # (label, batch, step_seconds(n), bare loop in channels-last)
        fvis_case("(a) class logit, batch 1", logit, 1),
        fvis_case("(a) class logit, batch 8", logit, 8),
        fvis_case("(a) class logit, batch 1, --no-channels-last", logit, 1, channels_last=False),
        fvis_case("(a) class logit, batch 8, --no-channels-last", logit, 8, channels_last=False),
        fvis_case("(a) class logit, batch 1, vs channels-last bare", logit, 1, bare_cl=True),
        fvis_case("(a) class logit, batch 8, vs channels-last bare", logit, 8, bare_cl=True),
        fvis_case("(a) class logit, batch 1, --param pixel --no-transforms (loop alone), vs channels-last bare",
                  logit, 1, False, "pixel", bare_cl=True),
        fvis_case("(a) class logit, batch 8, --param pixel --no-transforms (loop alone), vs channels-last bare",
                  logit, 8, False, "pixel", bare_cl=True),
        fvis_case("(b) channel _blocks.1:3 (early), batch 1", obj.channel("_blocks.1", 3), 1),
        fvis_case("(b) channel _blocks.1:3 (early), batch 8", obj.channel("_blocks.1", 3), 8),
    ]
    lucent = None if args.no_lucent else import_lucent()
    if lucent is not None:
        cases += [(f"reference: Lucent 0.1.8 render_vis, class logit, batch {batch}", batch,
                   lambda n, batch=batch: lucent_step_seconds(lucent, model, 94, batch, n), False) for batch in (1, 8)]
    rows = []
    for label, batch, step_seconds, bare_cl in cases:
        pairs = paired(model, batch, args.steps, args.rounds, step_seconds, bare_cl)
        ratios = sorted(f / b for b, f in pairs)
        q1, med, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        b = statistics.median(b for b, _ in pairs)
        f = statistics.median(f for _, f in pairs)
        fastest = min(f for _, f in pairs) / min(b for b, _ in pairs)  # noise only ever adds time
        rows.append((label, b, f, med, q1, q3, fastest, ratios))
        print(f"{label:<70} bare {b * 1000:7.1f} ms  timed {f * 1000:7.1f} ms  ratio {med:.3f} "
              f"[IQR {q1:.3f}-{q3:.3f}]  fastest rounds {fastest:.3f}", flush=True)

    lines = [
        "# Engine overhead: fvis render vs bare forward+backward",
        "",
        f"Command: `python scripts/bench_engine.py --steps {args.steps} --rounds {args.rounds} --allocator {args.allocator}`",
        "",
        f"EfficientNet-Lite0, 224x224, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}. "
        f"{args.rounds} rounds of {args.steps} steps; in each round a bare block and an fvis block run back to "
        "back (order alternating), and the ratio is taken per round. fvis = Fourier parameterization + "
        "transformation robustness + Adam, input fed channels-last on the CPU (the `fvis render` default) unless "
        "the row says otherwise; bare = `model(x)[:, c].sum().backward()` on a leaf input tensor (fvis's starting "
        "image) in plain NCHW layout, weights frozen; \"vs channels-last bare\" rows feed the bare loop's input "
        "channels-last too (the recipe's own cost, layout gain taken out). Allocator (both sides): " + ("fvis.tune_allocator(), as the `fvis` CLI sets it" if args.allocator == "tuned"
                                             else "glibc defaults") + ". Targets: (a) <= 1.05x, (b) <= 0.5x the bare full-model cost."
        + (" Reference rows: Lucent 0.1.8's own `render_vis` (its Fourier image at 224, standard transforms, "
           "Adam 0.05; a fresh copy of the model per block, copied outside the timing)." if lucent else ""),
        "",
        "| case | bare ms/step | fvis (or Lucent) ms/step | ratio to bare (median of rounds) | IQR of rounds | rounds <= 1.05 | fastest / fastest bare |",
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
