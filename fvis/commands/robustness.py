"""``fvis robustness``: an AutoAttack-style report (attacks in sequence on the images still
correctly classified) over a folder, with optional transfer to other models."""
from __future__ import annotations

from pathlib import Path

from ..attacks.robustness import ATTACKS, DEFAULT_ATTACKS, check_attacks, robustness_files
from ..errors import FvisError
from ..files import check_writable, list_images
from ..models import load
from ._args import MODEL_HELP, add_model_args, add_run_args, fraction, load_model, positive_int

HELP = "robust accuracy under APGD-CE, APGD-T and Square in sequence (AutoAttack-style report)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="every image in a folder")
    parser.add_argument("--labels", default="clean-top1", metavar="FILE|from-names|clean-top1",
                        help="true classes: a CSV (image,label) or JSON file, class names in the file names, "
                             "or the model's clean predictions (default)")
    parser.add_argument("--eps", type=fraction, default=4 / 255, help="ball radius in pixel units (default 4/255)")
    parser.add_argument("--norm", choices=["linf", "l2"], default="linf", help="norm of the eps-ball")
    parser.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), metavar="A,B,...",
                        help=f"run in this order; from {', '.join(ATTACKS)} (default {','.join(DEFAULT_ATTACKS)})")
    parser.add_argument("--evaluators", default="", metavar="M2,M3", help="models that judge the same adversarial images")
    parser.add_argument("--steps", type=positive_int, default=100, help="APGD / PGD steps (default 100)")
    parser.add_argument("--queries", type=positive_int, default=5000, help="Square's query budget (default 5000)")
    parser.add_argument("--restarts", type=positive_int, default=1, help="restarts per attack (default 1)")
    parser.add_argument("--targets", type=positive_int, default=9, metavar="K", help="APGD-T's top-k targets (9)")
    add_run_args(parser)
    add_model_args(parser)


def run(args) -> None:
    if not args.eps > 0:
        raise FvisError(f"eps must be > 0, got {args.eps}")
    attacks = check_attacks([a.strip() for a in args.attacks.split(",") if a.strip()])
    paths = list_images(args.images)
    out = check_writable(args.out)
    model = load_model(args)
    evaluators = {name: load(name, device=args.device) for name in (e.strip() for e in args.evaluators.split(",")) if name}
    r = robustness_files(model, paths, out, labels=args.labels, evaluators=evaluators, eps=args.eps, norm=args.norm,
                         attacks=attacks, steps=args.steps, queries=args.queries, restarts=args.restarts,
                         targets=args.targets, seed=args.seed, progress=not args.quiet)
    print(f"{'attack':<10} {'attacked':>8} {'fooled':>6} {'robust acc':>10} {'seconds':>8}")
    for a in r.attacks:
        print(f"{a['attack']:<10} {a['attacked']:8d} {a['fooled']:6d} {a['robust_accuracy_after']:10.1%} "
              f"{a['seconds']:8.1f}")
    for name, e in r.evaluators.items():
        print(f"transfer to {name}: accuracy {e['clean_accuracy']:.1%} clean, {e['adversarial_accuracy']:.1%} "
              f"adversarial ({e['transferred']}/{e['fooled_on_source']} fooled images transfer)")
    print(f"clean accuracy {r.clean_accuracy:.1%}, robust accuracy {r.robust_accuracy:.1%} "
          f"(eps {args.eps * 255:.3g}/255 {args.norm}, judged on the saved 8-bit PNGs) -> {out}/")
