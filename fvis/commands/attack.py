"""``fvis attack``: adversarial examples within an eps-ball (success judged on the saved PNG)."""
from __future__ import annotations

from pathlib import Path

from ..attacks import METHODS, attack_files
from ..classes import resolve_class
from ..errors import FvisError
from ..files import check_writable, list_images
from ._args import MODEL_HELP, add_model_args, add_run_args, fraction, load_model, nonnegative_int, positive_int

HELP = "adversarial examples within an eps-ball (success judged on the saved PNG)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="image file(s)")
    src.add_argument("--images", type=Path, metavar="DIR", help="every image in a folder")
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target", metavar="CLASS", help="class to reach: index or ImageNet name")
    goal.add_argument("--untargeted", action="store_true", help="leave the true class")
    parser.add_argument("--label", metavar="CLASS", help="true class for --untargeted (default: the clean prediction)")
    parser.add_argument("--eps", type=fraction, default=8 / 255, help="ball radius in pixel units, e.g. 8/255 (default)")
    parser.add_argument("--norm", choices=["linf", "l2"], help="norm of the eps-ball (default linf; cw: l2)")
    parser.add_argument("--steps", type=positive_int, default=10,
                        help="steps per restart (default 10); square: queries per image; cw: steps per constant")
    parser.add_argument("--step-size", type=fraction, help="pgd/mifgsm/adam; default: eps/4")
    parser.add_argument("--method", choices=METHODS, default="pgd",
                        help="pgd, mifgsm, adam, apgd (Auto-PGD), apgd-t (targeted DLR over the top-k classes; "
                             "untargeted goal), square (scores only, no gradients), cw (Carlini-Wagner L2, unbounded)")
    parser.add_argument("--loss", choices=["ce", "margin", "dlr"],
                        help="ce (default), margin (C&W logit margin; square's default), dlr (apgd)")
    parser.add_argument("--targets", type=positive_int, default=9, metavar="K", help="apgd-t: top-k target classes (9)")
    parser.add_argument("--search-steps", type=positive_int, default=5, metavar="N",
                        help="cw: constants tried per image (binary search, default 5)")
    parser.add_argument("--restarts", type=positive_int, default=1, help="restarts (random starts) per image")
    parser.add_argument("--eot", type=nonnegative_int, default=0, metavar="N", help="average over N random transforms per step")
    parser.add_argument("--kappa", type=float, default=0.0, help="early-stop only once the logit margin exceeds this")
    parser.add_argument("--no-random-start", action="store_true", help="start at the clean image")
    parser.add_argument("--no-early-stop", action="store_true", help="run every step even after success")
    parser.add_argument("--heldout", type=nonnegative_int, default=32, metavar="N",
                        help="report success under N held-out random transforms (0: skip)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    add_run_args(parser)
    add_model_args(parser)


def run(args) -> None:
    paths = list_images(args.images) if args.images else args.image
    out = check_writable(args.out)
    model = load_model(args)
    names = model.class_names
    target = None if args.untargeted else resolve_class(args.target, names)
    label = resolve_class(args.label, names) if args.label is not None else None
    if label is not None and not args.untargeted:
        raise FvisError("--label is for --untargeted attacks")
    report = attack_files(model, paths, out, target=target, label=label, batch_size=args.batch_size,
                          heldout=args.heldout, progress=not args.quiet, **options(args))
    s, rows = report["summary"], report["records"]
    width = max(len(r["image"]) for r in rows)
    print(f"{'image':<{width}}  {'clean top-1':<22} {'adversarial top-1':<22} {'p':>6} {'Linf*255':>8} "
          f"{'L2':>7} {'steps':>5}  success")
    for r in rows:
        c, a = r["clean_top5"][0], r["adversarial_top5"][0]
        print(f"{r['image']:<{width}}  {c['name'][:22]:<22} {a['name'][:22]:<22} {r['prob']:6.3f} "
              f"{r['linf_255']:8.2f} {r['l2']:7.3f} {r['steps_used']:5d}  {'yes' if r['success'] else 'no'}")
    heldout = f", held-out transform success {s['heldout_success_mean']:.2f}" if s["heldout_success_mean"] is not None else ""
    print(f"success {sum(r['success'] for r in rows)}/{len(rows)} ({s['success_rate']:.1%}, judged on the saved "
          f"8-bit PNGs), median Linf {s['median_linf_255']:.2f}/255, median L2 {s['median_l2']:.3f}, "
          f"{s['seconds']:.1f} s{heldout} -> {out}/")


def options(args) -> dict:
    """The keyword options of ``args.method`` (flags another method owns are refused)."""
    m = args.method
    norm = args.norm or ("l2" if m == "cw" else "linf")
    common = {"method": m, "seed": args.seed}
    owners = {"step_size": ("pgd", "mifgsm", "adam"), "no_random_start": ("pgd", "mifgsm", "adam"),
              "eot": ("pgd", "mifgsm", "adam", "apgd", "apgd-t")}
    for flag, methods in owners.items():
        if getattr(args, flag) not in (None, False, 0) and m not in methods:
            raise FvisError(f"--{flag.replace('_', '-')} is for --method {'/'.join(methods)}")
    if m in ("apgd-t", "cw") and args.loss is not None:
        raise FvisError(f"--loss is fixed for --method {m}")
    if m in ("pgd", "mifgsm", "adam"):
        return {**common, "eps": args.eps, "norm": norm, "steps": args.steps, "step_size": args.step_size,
                "loss": args.loss or "ce", "restarts": args.restarts, "random_start": not args.no_random_start,
                "eot": args.eot, "early_stop": not args.no_early_stop, "kappa": args.kappa}
    if m in ("apgd", "apgd-t"):
        if args.loss == "margin":
            raise FvisError("--method apgd takes --loss ce or dlr")
        extra = {"targets": args.targets} if m == "apgd-t" else {"loss": args.loss or "ce"}
        if m == "apgd-t" and not args.untargeted:
            raise FvisError("--method apgd-t is untargeted (it picks its own targets): use --untargeted")
        return {**common, "eps": args.eps, "norm": norm, "steps": args.steps, "restarts": args.restarts,
                "eot": args.eot, "early_stop": not args.no_early_stop, **extra}
    if m == "square":
        if args.loss == "dlr":
            raise FvisError("--method square takes --loss margin or ce")
        return {**common, "eps": args.eps, "norm": norm, "steps": args.steps, "loss": args.loss or "margin",
                "restarts": args.restarts, "early_stop": not args.no_early_stop}
    if norm != "l2":
        raise FvisError("--method cw is an L2 attack (--norm l2)")
    return {**common, "steps": args.steps, "search_steps": args.search_steps, "kappa": args.kappa}
