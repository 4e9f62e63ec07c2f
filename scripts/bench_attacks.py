"""APGD, APGD-T, Square, C&W and an AutoAttack-style robustness report: fvis side by side with
torchattacks on EfficientNet-Lite0, plus a transfer table (Lite0 -> Lite1, Lite2).

    pip install --no-deps torchattacks      # needed for the side-by-side rows (skipped without it)
    python scripts/bench_attacks.py [--images 8] [--eps 1/255] [--steps 10] [--queries 100] \
        [--out results/attacks/bench.md]

Inputs: crops of the offline sample photos (``scripts/photos.py``), 224x224, 8-bit. Labels:
Lite0's clean predictions (clean accuracy 100% by construction). Every success and robust
accuracy, fvis's and torchattacks', is judged the same way: on the quantized 8-bit image (norm
bound kept), re-classified. torchattacks' own float-image verdict is shown next to it.
Both tools get the same eps, steps, restarts, target counts and query budgets; wall times are
measured in the same process, one after the other (``--rounds`` interleaved rounds, median).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from photos import photo_crops  # noqa: E402

import fvis  # noqa: E402
from fvis.attacks import apgd, cw, pgd, quantize, robustness, square  # noqa: E402


def fraction(text: str) -> float:
    a, _, b = text.partition("/")
    return float(a) / float(b) if b else float(a)


@torch.no_grad()
def fooled(model, clean, adv, labels, eps, norm):
    q = quantize(clean, adv, eps, norm)
    d = (q - clean).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return (model(q).argmax(1) != labels) & (size <= eps + 1e-6), (model(adv).argmax(1) != labels)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def side_by_side(model, x, y, args, ta):
    eps, norm, steps, q = args.eps, "linf", args.steps, args.queries
    n = len(x)
    k = args.targets
    rows = []
    cases = {
        f"APGD-CE, {steps} steps": (
            lambda: apgd(model, x, labels=y, eps=eps, steps=steps, loss="ce", seed=0, progress=False).adversarial,
            lambda: ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)(x, y)),
        f"APGD-CE, {steps} steps, fvis without early stop (every step, like torchattacks)": (
            lambda: apgd(model, x, labels=y, eps=eps, steps=steps, loss="ce", early_stop=False, seed=0,
                         progress=False).adversarial,
            lambda: ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=0)(x, y)),
        f"APGD-DLR, {steps} steps": (
            lambda: apgd(model, x, labels=y, eps=eps, steps=steps, loss="dlr", seed=0, progress=False).adversarial,
            lambda: ta.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="dlr", seed=0)(x, y)),
        f"APGD-T, {steps} steps, {k} targets": (
            lambda: apgd(model, x, labels=y, eps=eps, steps=steps, targets=k, seed=0, progress=False).adversarial,
            lambda: ta.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=k + 1, seed=0)(x, y)),
        f"Square L-inf, {q} queries": (
            lambda: square(model, x, labels=y, eps=eps, steps=q, seed=0, progress=False).adversarial,
            lambda: ta.Square(model, norm="Linf", eps=eps, n_queries=q, n_restarts=1, seed=0)(x, y)),
        f"Square L2 (eps {args.eps_l2}), {q} queries": (
            lambda: square(model, x, labels=y, eps=args.eps_l2, norm="l2", steps=q, seed=0, progress=False).adversarial,
            lambda: ta.Square(model, norm="L2", eps=args.eps_l2, n_queries=q, n_restarts=1, seed=0)(x, y)),
    }
    for name, (f_fvis, f_ta) in cases.items():
        times = {"fvis": [], "torchattacks": []}
        outs = {}
        for _ in range(args.rounds):
            torch.manual_seed(0)
            outs["torchattacks"], t = timed(f_ta)
            times["torchattacks"].append(t)
            outs["fvis"], t = timed(f_fvis)
            times["fvis"].append(t)
        e, nm = (args.eps_l2, "l2") if "L2" in name else (eps, "linf")
        ok_t, float_t = fooled(model, x, outs["torchattacks"], y, e, nm)
        ok_f, _ = fooled(model, x, outs["fvis"], y, e, nm)
        tt, tf = statistics.median(times["torchattacks"]), statistics.median(times["fvis"])
        rows.append(f"| {name} | {int(ok_t.sum())}/{n} (float: {int(float_t.sum())}/{n}) | {int(ok_f.sum())}/{n} | "
                    f"{tt:.1f} | {tf:.1f} | {tf / tt:.2f} |")
        print(rows[-1], flush=True)
    # C&W: torchattacks' one constant for `cw_steps` steps vs fvis's binary search with the same total steps
    cs, ss = args.cw_steps, args.cw_search
    torch.manual_seed(0)
    adv_t, tt = timed(lambda: ta.CW(model, c=1, kappa=0, steps=cs, lr=0.01)(x, y))
    r, tf = timed(lambda: cw(model, x, labels=y, steps=cs // ss, search_steps=ss, c=1, seed=0, progress=False))
    ok_t, float_t = fooled(model, x, adv_t, y, float("inf"), "l2")
    l2_t = quantize(x, adv_t, float("inf"), "l2").sub(x).flatten(1).norm(dim=1)
    med = lambda v, m: f"{float(v[m].median()):.3f}" if m.any() else "-"  # noqa: E731
    rows.append(f"| C&W L2, {cs} steps in all (fvis: {ss} constants x {cs // ss}) | {int(ok_t.sum())}/{n} "
                f"(float: {int(float_t.sum())}/{n}), median L2 {med(l2_t, ok_t)} | {int(r.success.sum())}/{n}, "
                f"median L2 {med(r.l2, r.success)} | {tt:.1f} | {tf:.1f} | {tf / tt:.2f} |")
    print(rows[-1], flush=True)
    return rows


def square_seeds(model, crops, args, ta):
    """Square L2 on more images and several seeds (random search: one seed on 8 images says little)."""
    x = (torch.stack(list(crops.values())[1::2][:args.square_images]) * 255).round() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = []
    for seed in args.square_seeds:
        r, tf = timed(lambda: square(model, x, labels=y, eps=args.eps_l2, norm="l2", steps=args.queries, seed=seed,
                                     progress=False))
        torch.manual_seed(seed)
        adv, tt = timed(lambda: ta.Square(model, norm="L2", eps=args.eps_l2, n_queries=args.queries, seed=seed)(x, y))
        ok_t, float_t = fooled(model, x, adv, y, args.eps_l2, "l2")
        rows.append(f"| {seed} | {int(ok_t.sum())}/{len(x)} (float: {int(float_t.sum())}/{len(x)}) | "
                    f"{int(r.success.sum())}/{len(x)} | {tt:.1f} | {tf:.1f} | {tf / tt:.2f} |")
        print(rows[-1], flush=True)
    return rows


def autoattack(model, x, y, args, ta):
    n = len(x)
    torch.manual_seed(0)
    adv_t, tt = timed(lambda: ta.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=10,
                                            seed=0)(x, y))
    ok_t, float_t = fooled(model, x, adv_t, y, args.eps, "linf")
    rep, tf = timed(lambda: robustness(model, x, y, eps=args.eps, attacks=("apgd-ce", "apgd-t", "square"), steps=10,
                                       queries=5000, targets=9, seed=0, progress=False))
    return [f"| torchattacks.AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square 5000) | "
            f"{1 - float(ok_t.float().mean()):.1%} (float: {1 - float(float_t.float().mean()):.1%}) | {tt:.1f} | 1.00 |",
            f"| fvis robustness (apgd-ce, apgd-t, square; 10 steps, 9 targets, 5000 queries) | "
            f"{rep.robust_accuracy:.1%} (after each: " + ", ".join(f"{k} {v:.0%}" for k, v in rep.per_attack.items())
            + f") | {tf:.1f} | {tf / tt:.2f} |"]


def transfer(model, x, y, args):
    judges = {name: fvis.load(name) for name in ("efficientnet-lite1", "efficientnet-lite2")}
    rows = []
    for eot in (0, args.eot):
        r, t = timed(lambda: pgd(model, x, labels=y, eps=args.transfer_eps, steps=args.transfer_steps, eot=eot,
                                 early_stop=False, seed=0, progress=False))
        cells = []
        with torch.no_grad():
            for name, m in judges.items():
                before, after = m(x).argmax(1), m(r.adversarial).argmax(1)
                cells.append(f"{int((before != after).sum())}/{len(x)}")
        rows.append(f"| PGD{' + EOT ' + str(eot) if eot else ''}, eps {args.transfer_eps * 255:.0f}/255, "
                    f"{args.transfer_steps} steps, no early stop | {int(r.success.sum())}/{len(x)} | "
                    + " | ".join(cells) + f" | {t:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--eps", type=fraction, default=1 / 255)
    p.add_argument("--eps-l2", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--targets", type=int, default=3)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--cw-steps", type=int, default=30)
    p.add_argument("--cw-search", type=int, default=3)
    p.add_argument("--eot", type=int, default=4)
    p.add_argument("--transfer-eps", type=fraction, default=8 / 255)
    p.add_argument("--transfer-steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--square-images", type=int, default=16)
    p.add_argument("--square-seeds", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2])
    p.add_argument("--skip", default="", help="comma list of sections to skip: side,square,autoattack,transfer")
    p.add_argument("--out", type=Path, default=Path("results/attacks/bench.md"))
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_grad_enabled(True)
    model = fvis.load("efficientnet-lite0")
    crops = photo_crops(224, sides=(224, 288), flips=(0, 1))
    x = (torch.stack(list(crops.values())[::max(len(crops) // args.images, 1)][:args.images]) * 255).round() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks is not installed (pip install --no-deps torchattacks): side-by-side rows skipped")
    lines = ["# APGD, APGD-T, Square, C&W, AutoAttack: fvis vs torchattacks (EfficientNet-Lite0)", "",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
             f"CPU, **shared with other jobs** (wall times are noisy; compare the ratios of one run).  ",
             f"Inputs: {len(x)} crops of the offline photos, 224x224, 8-bit; labels: Lite0's clean predictions. "
             "Success / robust accuracy judged on the quantized 8-bit image within eps for both tools "
             "(torchattacks' own float verdict in brackets).", ""]
    if ta is not None and "side" not in skip:
        lines += [f"## Attacks side by side (L-inf eps {args.eps * 255:.3g}/255 unless stated; same steps, restarts, "
                  "targets, queries)", "",
                  "| attack | torchattacks fooled | fvis fooled | torchattacks s | fvis s | time ratio |",
                  "|---|---|---|---:|---:|---:|"]
        lines += side_by_side(model, x, y, args, ta)
    if ta is not None and "square" not in skip:
        lines += ["", f"## Square L2 (eps {args.eps_l2}, {args.queries} queries) on {args.square_images} other crops, "
                  "per seed", "", "| seed | torchattacks fooled | fvis fooled | torchattacks s | fvis s | time ratio |",
                  "|---|---|---|---:|---:|---:|"]
        lines += square_seeds(model, crops, args, ta)
    if ta is not None and "autoattack" not in skip:
        lines += ["", f"## Robust accuracy (L-inf eps {args.eps * 255:.3g}/255)", "",
                  "| report | robust accuracy (8-bit) | seconds | time ratio |", "|---|---|---:|---:|"]
        lines += autoattack(model, x, y, args, ta)
    if "transfer" not in skip:
        lines += ["", "## Transfer: made on Lite0, judged by Lite1 and Lite2 (prediction changed vs its clean one)",
                  "", "| attack | Lite0 fooled | Lite1 changed | Lite2 changed | seconds |", "|---|---|---|---|---:|"]
        lines += transfer(model, x, y, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
