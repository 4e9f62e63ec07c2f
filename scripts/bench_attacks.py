"""APGD, APGD-T, Square, C&W and an AutoAttack-style robustness report: fvis side by side with
torchattacks on EfficientNet-Lite0, plus a transfer table (Lite0 -> Lite1, Lite2).

    pip install --no-deps torchattacks      # needed for every section but transfer
    python scripts/bench_attacks.py --section strength|time|autoattack|transfer [options] \
        [--out results/attacks/bench_<section>.md]

Sections (each writes its own file, so each fits one sitting of the shared benchmark core):
``strength``: success at budgets where neither tool fools every image (few APGD steps, few
Square queries, small L2 balls), on ``--images`` crops and several ``--seeds``; ``time``: wall
time in ``--rounds`` interleaved rounds (median and spread) on ``--time-images`` crops;
``autoattack``: robust accuracy of torchattacks' AutoAttack components (APGD-CE, APGD-T, FAB-T,
Square) chained as AutoAttack chains them vs ``fvis.attacks.robustness`` (APGD-CE, APGD-T,
Square) at the same reduced budget; ``transfer``: PGD made on Lite0, with and without EOT,
judged by Lite1 and Lite2.

Inputs: crops of the offline sample photos (``scripts/photos.py``), 224x224, 8-bit. Labels:
Lite0's clean predictions (clean accuracy 100% by construction). Every success and robust
accuracy, fvis's and torchattacks', is judged the same way: on the quantized 8-bit image (norm
bound kept), re-classified. torchattacks' own float-image verdict is shown next to it.
Both tools get the same eps, steps, restarts, target counts and query budgets.
"""
from __future__ import annotations

import argparse
import platform
import shlex
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


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


@torch.no_grad()
def fooled(model, clean, adv, labels, eps, norm):
    """(fooled on the 8-bit image within eps, fooled on the float image as returned)."""
    q = quantize(clean, adv, eps, norm)
    d = (q - clean).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return (model(q).argmax(1) != labels) & (size <= eps + 1e-6), (model(adv).argmax(1) != labels)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def strength_cases(model, args, ta):
    """name -> (fvis(x, y, seed) -> adversarial, torchattacks(x, y, seed) -> adversarial, eps, norm)."""
    e, e2, s, q, k = args.eps, args.eps_l2, args.steps, args.queries, args.targets
    return {
        f"APGD-CE, L-inf {e * 255:.3g}/255, {s} step(s)": (
            lambda x, y, r: apgd(model, x, labels=y, eps=e, steps=s, loss="ce", seed=r, progress=False).adversarial,
            lambda x, y, r: ta.APGD(model, norm="Linf", eps=e, steps=s, loss="ce", seed=r)(x, y), e, "linf"),
        f"APGD-DLR, L-inf {e * 255:.3g}/255, {s} step(s)": (
            lambda x, y, r: apgd(model, x, labels=y, eps=e, steps=s, loss="dlr", seed=r, progress=False).adversarial,
            lambda x, y, r: ta.APGD(model, norm="Linf", eps=e, steps=s, loss="dlr", seed=r)(x, y), e, "linf"),
        f"APGD-T, L-inf {e * 255:.3g}/255, {s} step(s), {k} targets": (
            lambda x, y, r: apgd(model, x, labels=y, eps=e, steps=s, targets=k, seed=r, progress=False).adversarial,
            lambda x, y, r: ta.APGDT(model, norm="Linf", eps=e, steps=s, n_classes=k + 1, seed=r)(x, y), e, "linf"),
        f"APGD-CE, L2 {e2}, {args.steps_l2} step(s)": (
            lambda x, y, r: apgd(model, x, labels=y, eps=e2, norm="l2", steps=args.steps_l2, loss="ce", seed=r,
                                 progress=False).adversarial,
            lambda x, y, r: ta.APGD(model, norm="L2", eps=e2, steps=args.steps_l2, loss="ce", seed=r)(x, y), e2, "l2"),
        f"Square, L-inf {e * 255:.3g}/255, {q} queries": (
            lambda x, y, r: square(model, x, labels=y, eps=e, steps=q, seed=r, progress=False).adversarial,
            lambda x, y, r: ta.Square(model, norm="Linf", eps=e, n_queries=q, seed=r)(x, y), e, "linf"),
        f"Square, L2 {args.eps_l2_square}, {q} queries": (
            lambda x, y, r: square(model, x, labels=y, eps=args.eps_l2_square, norm="l2", steps=q, seed=r,
                                   progress=False).adversarial,
            lambda x, y, r: ta.Square(model, norm="L2", eps=args.eps_l2_square, n_queries=q, seed=r)(x, y),
            args.eps_l2_square, "l2"),
    }


def strength(model, x, y, args, ta):
    n, rows = len(x), []
    cases = strength_cases(model, args, ta)
    for name, (f_fvis, f_ta, eps, norm) in cases.items():
        if args.rows and not any(w.lower() in name.lower() for w in args.rows):
            continue
        counts = {"fvis": [], "ta": [], "float": []}
        for seed in args.seeds:
            torch.manual_seed(seed)
            adv_t, adv_f = f_ta(x, y, seed), f_fvis(x, y, seed)
            ok_t, float_t = fooled(model, x, adv_t, y, eps, norm)
            ok_f, _ = fooled(model, x, adv_f, y, eps, norm)
            counts["ta"].append(int(ok_t.sum()))
            counts["float"].append(int(float_t.sum()))
            counts["fvis"].append(int(ok_f.sum()))
        total = n * len(args.seeds)
        cell = lambda c: f"{sum(c)}/{total} ({', '.join(map(str, c))})"  # noqa: E731
        rows.append(f"| {name} | {cell(counts['ta'])} [float: {sum(counts['float'])}] | {cell(counts['fvis'])} |")
        print(rows[-1], flush=True)
    if args.rows and not any(w.lower() in "c&w" for w in args.rows):
        return rows
    # C&W at its own budget: success and median L2 on the 8-bit images, one constant as torchattacks has
    cs = args.cw_steps
    torch.manual_seed(0)
    adv_t = ta.CW(model, c=1, kappa=0, steps=cs, lr=0.01)(x, y)
    ok_t, float_t = fooled(model, x, adv_t, y, float("inf"), "l2")
    l2_t = quantize(x, adv_t, float("inf"), "l2").sub(x).flatten(1).norm(dim=1)
    med = lambda v, m: f"{float(v[m].median()):.3f}" if m.any() else "-"  # noqa: E731
    for ss, abort in ((1, "batch"), (1, "item"), (args.cw_search, "item")):
        r = cw(model, x, labels=y, steps=cs // ss, search_steps=ss, c=1, abort_early=abort, seed=0, progress=False)
        both = r.success & ok_t
        rows.append(f"| C&W L2, {cs} steps in all (fvis: {ss} constant(s) x {cs // ss}, abort per {abort}) | "
                    f"{int(ok_t.sum())}/{n} [float: {int(float_t.sum())}], median L2 {med(l2_t, ok_t)} | "
                    f"{int(r.success.sum())}/{n}, median L2 {med(r.l2, r.success)}; of {int(both.sum())} fooled by "
                    f"both: L2 smaller by > 0.1% on {int((r.l2[both] < l2_t[both] * (1 - 1e-3)).sum())}, within "
                    f"0.1% on {int(((r.l2[both] - l2_t[both]).abs() <= l2_t[both] * 1e-3).sum())}, larger by > 0.1% "
                    f"on {int((r.l2[both] > l2_t[both] * (1 + 1e-3)).sum())} |")
        print(rows[-1], flush=True)
    return rows


def time_cases(model, args, ta):
    """name -> (fvis thunk, torchattacks thunk), on the timing crops ``x``, ``y`` bound later."""
    e, s, cs, ss = args.eps, args.time_steps, args.cw_steps, args.cw_search
    return {
        f"APGD-CE, {s} steps (fvis: per-item early stop)": (
            lambda x, y: apgd(model, x, labels=y, eps=e, steps=s, loss="ce", seed=0, progress=False),
            lambda x, y: ta.APGD(model, norm="Linf", eps=e, steps=s, loss="ce", seed=0)(x, y)),
        f"APGD-CE, {s} steps, fvis without early stop (every step, like torchattacks)": (
            lambda x, y: apgd(model, x, labels=y, eps=e, steps=s, loss="ce", early_stop=False, seed=0, progress=False),
            lambda x, y: ta.APGD(model, norm="Linf", eps=e, steps=s, loss="ce", seed=0)(x, y)),
        f"C&W L2, {cs} steps, one constant, whole-batch abort (same settings and rule as torchattacks)": (
            lambda x, y: cw(model, x, labels=y, steps=cs, search_steps=1, c=1, abort_early="batch", seed=0,
                            progress=False),
            lambda x, y: ta.CW(model, c=1, kappa=0, steps=cs, lr=0.01)(x, y)),
        f"C&W L2, {cs} steps, one constant, fvis's per-item abort (smaller L2 on some items)": (
            lambda x, y: cw(model, x, labels=y, steps=cs, search_steps=1, c=1, seed=0, progress=False),
            lambda x, y: ta.CW(model, c=1, kappa=0, steps=cs, lr=0.01)(x, y)),
        f"C&W L2, {cs} steps in all (fvis: binary search, {ss} constants x {cs // ss}, per-item abort)": (
            lambda x, y: cw(model, x, labels=y, steps=cs // ss, search_steps=ss, c=1, seed=0, progress=False),
            lambda x, y: ta.CW(model, c=1, kappa=0, steps=cs, lr=0.01)(x, y)),
        f"Square L-inf, {args.queries} queries": (
            lambda x, y: square(model, x, labels=y, eps=e, steps=args.queries, seed=0, progress=False),
            lambda x, y: ta.Square(model, norm="Linf", eps=e, n_queries=args.queries, seed=0)(x, y)),
    }


def timing(model, x, y, args, ta):
    cases = {k: v for k, v in time_cases(model, args, ta).items()
             if not args.rows or any(w.lower() in k.lower() for w in args.rows)}
    times = {name: {"fvis": [], "ta": []} for name in cases}
    for r in range(args.rounds):  # interleaved: every case once per round, the order of the tools alternating
        for name, (f_fvis, f_ta) in cases.items():
            order = [("ta", f_ta), ("fvis", f_fvis)][:: 1 if r % 2 == 0 else -1]
            for tool, f in order:
                torch.manual_seed(0)
                _, t = timed(lambda: f(x, y))
                times[name][tool].append(t)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t["fvis"], t["ta"])]
        span = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"  # noqa: E731
        rows.append(f"| {name} | {span(t['ta'])} | {span(t['fvis'])} | "
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
        print(rows[-1], flush=True)
    return rows


def autoattack(model, x, y, args, ta):
    """Per budget (steps, Square queries): torchattacks' AutoAttack components chained as
    AutoAttack chains them (each on the images still correct; here judged on the 8-bit image, as
    fvis judges) vs fvis.attacks.robustness; then torchattacks.AutoAttack as shipped."""
    e, norm = args.aa_eps, args.aa_norm
    tn, n, rows = {"linf": "Linf", "l2": "L2"}[norm], len(x), []
    each = lambda d: ", ".join(f"{k} {v:.1%}" for k, v in d.items())  # noqa: E731
    for s, q in args.aa_budgets:
        ta_attacks = {"apgd-ce": ta.APGD(model, norm=tn, eps=e, steps=s, loss="ce", seed=0),
                      "apgd-t": ta.APGDT(model, norm=tn, eps=e, steps=s, n_classes=10, seed=0),
                      "fab-t": ta.FAB(model, norm=tn, eps=e, steps=s, multi_targeted=True, n_classes=10, seed=0),
                      "square": ta.Square(model, norm=tn, eps=e, n_queries=q, seed=0)}
        robust, after, t0 = torch.ones(n, dtype=torch.bool), {}, time.perf_counter()
        for name, atk in ta_attacks.items():
            todo = robust.nonzero().flatten()
            if todo.numel():
                torch.manual_seed(0)
                ok, _ = fooled(model, x[todo], atk(x[todo], y[todo]), y[todo], e, norm)
                robust[todo[ok]] = False
            after[name] = float(robust.float().mean())
        tt = time.perf_counter() - t0
        rep, tf = timed(lambda: robustness(model, x, y, eps=e, norm=norm, attacks=("apgd-ce", "apgd-t", "square"),
                                           steps=s, queries=q, targets=9, seed=0, progress=False))
        rows += [f"| torchattacks' AutoAttack components, chained ({s} steps, 9 targets, FAB-T, Square {q}) | "
                 f"{robust.float().mean():.1%} | {each(after)} | {tt:.1f} | 1.00 |",
                 f"| fvis robustness (apgd-ce, apgd-t, square; {s} steps, 9 targets, Square {q}) | "
                 f"{rep.robust_accuracy:.1%} | {each(rep.per_attack)} | {tf:.1f} | {tf / tt:.2f} |"]
        print(*rows[-2:], sep="\n", flush=True)
    if not args.aa_shipped:
        return rows
    torch.manual_seed(0)
    aa, t_std = timed(lambda: ta.AutoAttack(model, norm=tn, eps=e, version="standard", n_classes=10, seed=0)(x, y))
    ok_std, float_std = fooled(model, x, aa, y, e, norm)
    rows.append(f"| torchattacks.AutoAttack(version='standard') as shipped (10 steps, Square 5000; judged in float "
                f"between attacks) | {1 - float(ok_std.float().mean()):.1%} [float: "
                f"{1 - float(float_std.float().mean()):.1%}] | | {t_std:.1f} | |")
    print(rows[-1], flush=True)
    return rows


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


def crops_of(crops, n, offset=0):
    values = list(crops.values())
    return (torch.stack(values[offset::max(len(values) // n, 1)][:n]) * 255).round() / 255


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--section", required=True, choices=["strength", "time", "autoattack", "transfer"])
    p.add_argument("--rows", type=lambda t: [w for w in t.split(";") if w], default=[],
                   help="only the rows whose name contains one of these strings (separated by ;)")
    p.add_argument("--images", type=int, default=32, help="crops for strength / autoattack (of 42)")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2])
    p.add_argument("--eps", type=fraction, default=1 / 255)
    p.add_argument("--eps-l2", type=float, default=0.25)
    p.add_argument("--eps-l2-square", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--steps-l2", type=int, default=1)
    p.add_argument("--targets", type=int, default=3)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--cw-steps", type=int, default=30)
    p.add_argument("--cw-search", type=int, default=3)
    p.add_argument("--time-images", type=int, default=8)
    p.add_argument("--time-steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--aa-norm", choices=["linf", "l2"], default="l2")
    p.add_argument("--aa-eps", type=fraction, default=0.25)
    p.add_argument("--aa-budgets", type=lambda t: [tuple(map(int, b.split(":"))) for b in t.split(",")],
                   default=[(1, 100)], help="STEPS:QUERIES,... (default 1:100)")
    p.add_argument("--aa-shipped", action="store_true", help="also torchattacks.AutoAttack as shipped")
    p.add_argument("--eot", type=int, default=4)
    p.add_argument("--transfer-images", type=int, default=8)
    p.add_argument("--transfer-eps", type=fraction, default=8 / 255)
    p.add_argument("--transfer-steps", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = args.out or Path(f"results/attacks/bench_{args.section}.md")
    torch.set_grad_enabled(True)
    model = fvis.load("efficientnet-lite0")
    crops = photo_crops(224, sides=(224, 288, 352), flips=(0, 1))
    n = {"time": args.time_images, "transfer": args.transfer_images}.get(args.section, args.images)
    x = crops_of(crops, n)
    with torch.no_grad():
        y = model(x).argmax(1)
    ta = None
    if args.section != "transfer":
        import torchattacks as ta  # benchmark only: pip install --no-deps torchattacks
    lines = [f"# fvis vs torchattacks on EfficientNet-Lite0: {args.section}", "",
             f"Command: `python {shlex.join(sys.argv)}`  ",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
             "CPU (one core, pinned; other jobs run on the other core).  ",
             f"Inputs: {len(x)} crops of the offline photos (of {len(crops)}), 224x224, 8-bit; labels: Lite0's clean "
             "predictions. Success / robust accuracy judged on the quantized 8-bit image within eps for both tools "
             "(torchattacks' own float verdict in brackets).", ""]
    if args.section == "strength":
        lines += [f"Seeds {args.seeds}: each cell is fooled over all seeds (per seed in brackets). No seconds here "
                  "(see the time section).", "", "| attack | torchattacks fooled | fvis fooled |", "|---|---|---|"]
        lines += strength(model, x, y, args, ta)
    elif args.section == "time":
        lines += [f"{args.rounds} interleaved rounds (every case once per round, the tools' order alternating); "
                  "seconds and ratio fvis / torchattacks: median (min-max).", "",
                  "| attack | torchattacks s | fvis s | time ratio |", "|---|---:|---:|---:|"]
        lines += timing(model, x, y, args, ta)
    elif args.section == "autoattack":
        lines += [f"{args.aa_norm} eps {args.aa_eps:.4g}.", "",
                  "| report | robust accuracy (8-bit) | after each attack | seconds | time ratio |",
                  "|---|---|---|---:|---:|"]
        lines += autoattack(model, x, y, args, ta)
    else:
        lines += ["Made on Lite0, judged by Lite1 and Lite2 (prediction changed vs its clean one).", "",
                  "| attack | Lite0 fooled | Lite1 changed | Lite2 changed | seconds |", "|---|---|---|---|---:|"]
        lines += transfer(model, x, y, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
