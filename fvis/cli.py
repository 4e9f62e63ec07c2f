"""The ``fvis`` command line. Bad input: one clear line on stderr, exit status 2, no traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .allocator import tune_allocator
from .errors import FvisError
from .recipes import DEFAULT as DEFAULT_RECIPE, RECIPES


def _size(text: str):
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            size = (int(h), int(w))
        else:
            size = (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if min(size) < 16:
        raise argparse.ArgumentTypeError(f"image size must be at least 16 px, got {text!r}")
    return size


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """``0.03`` or ``8/255``."""
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="PATH", help="local state-dict for the architecture (weights_only load)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvis", description="Optimization-based feature visualization.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list loadable model names")

    p = sub.add_parser("layers", help="print every module with its type and output shape")
    p.add_argument("model")
    p.add_argument("--size", type=_size, help="input size N or HxW (default: the model's)")
    _add_model_args(p)

    p = sub.add_parser("render", help="render objectives (one batch item each) into a folder")
    p.add_argument("--model", required=True)
    p.add_argument("--objective", "-o", action="append", required=True, metavar="SPEC",
                   help="channel:LAYER:C | neuron:LAYER:C[:X:Y] | layer:LAYER | logit:C (repeatable)")
    p.add_argument("--param", choices=["fourier", "pixel"], default="fourier")
    p.add_argument("--size", type=_size, help="image size N or HxW (default: the model's input size)")
    p.add_argument("--steps", type=_positive_int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["adam", "adamw", "nadam", "sgd", "rmsprop"], default="adam")
    p.add_argument("--decay-power", type=float, default=1.0, help="Fourier spectrum decay (higher = smoother)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-transforms", action="store_true", help="no transformation robustness")
    p.add_argument("--no-channels-last", action="store_true",
                   help="feed the model plain NCHW input (default on the CPU: channels-last, when the model takes it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)

    p = sub.add_parser("attack", help="adversarial examples within an eps-ball (success judged on the saved PNG)")
    p.add_argument("--model", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", type=Path, metavar="PATH", help="image file(s)")
    src.add_argument("--images", type=Path, metavar="DIR", help="every image in a folder")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target", metavar="CLASS", help="class to reach: index or ImageNet name")
    goal.add_argument("--untargeted", action="store_true", help="leave the true class")
    p.add_argument("--label", metavar="CLASS", help="true class for --untargeted (default: the clean prediction)")
    p.add_argument("--eps", type=_fraction, default=8 / 255, help="ball radius in pixel units, e.g. 8/255 (default)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--steps", type=_positive_int, default=10, help="steps per restart (default 10)")
    p.add_argument("--step-size", type=_fraction, help="default: eps/4")
    p.add_argument("--method", choices=["pgd", "mifgsm", "adam"], default="pgd")
    p.add_argument("--loss", choices=["ce", "margin"], default="ce")
    p.add_argument("--restarts", type=_positive_int, default=1)
    p.add_argument("--eot", type=int, default=0, metavar="N", help="average over N random transforms per step")
    p.add_argument("--kappa", type=float, default=0.0, help="early-stop only once the logit margin exceeds this")
    p.add_argument("--no-random-start", action="store_true")
    p.add_argument("--no-early-stop", action="store_true")
    p.add_argument("--heldout", type=int, default=32, metavar="N",
                   help="report success under N held-out random transforms (0: skip)")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)
    p = sub.add_parser("evaluate", help="score class images <class index>_*.png: clean p, robustness, transfer, HFER")
    p.add_argument("folder", type=Path)
    p.add_argument("--model", required=True, help="the model the images were made for")
    p.add_argument("--evaluators", default="", metavar="M2,M3", help="independent models for transfer")
    p.add_argument("--transforms", type=int, default=32, metavar="N", help="held-out transforms for robustness")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="where evaluation.{csv,json,md} go (default: the folder)")
    p.add_argument("--reference", type=Path, metavar="DIR",
                   help="natural images <class index>_*: adds activation-path similarity columns")
    _add_model_args(p)

    p = sub.add_parser("prototype", help="class prototypes by a named recipe (+ metrics, naturalness, contact sheet)")
    p.add_argument("--model", required=True)
    p.add_argument("--classes", required=True, metavar="C,C,...", help="class indices and/or names, e.g. 94,291,hummingbird")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help=f"{' | '.join(RECIPES)} (default {DEFAULT_RECIPE}); the flags below override its settings")
    p.add_argument("--per-class", type=_positive_int, default=1, metavar="K", help="prototypes per class (diverse)")
    p.add_argument("--steps", type=_positive_int, help="optimization steps (recipe's: 512, accentuate 256)")
    p.add_argument("--match", metavar="bn|images:DIR|seed|none", help="natural-activation source")
    p.add_argument("--match-stat", choices=["moments", "sorted"], help="match mean/std or whole sorted distributions")
    p.add_argument("--match-over", choices=["item", "batch"], help="statistics of each image or of the whole batch")
    p.add_argument("--match-ratio", type=float, help="matching gradient norm / objective's at the start")
    p.add_argument("--match-layers", help="per-block | all | LAYER,LAYER,...")
    p.add_argument("--param", choices=["fourier", "maco", "pixel"])
    p.add_argument("--reference", type=Path, metavar="DIR", help="images for the MACO amplitude spectrum")
    p.add_argument("--init", metavar="random|equidistant|image:PATH", help="start (image:PATH: accentuate a photo)")
    p.add_argument("--coarse", type=float, help="share of steps at half resolution (coarse-to-fine)")
    p.add_argument("--flip", type=float, help="probability of mirroring in the transforms")
    p.add_argument("--high-freq", type=float, help="weight of the high-frequency share penalty")
    p.add_argument("--tv", type=float, help="weight of the total-variation penalty")
    p.add_argument("--l2", type=float, help="weight of the L2 prior (distance from grey)")
    p.add_argument("--diversity", type=float, default=None, help="within-class diversity weight (default 50 when K > 1)")
    p.add_argument("--size", type=_size, help="image size N or HxW (default: the model's input size)")
    p.add_argument("--lr", type=float, help="learning rate (recipe's: 0.05)")
    p.add_argument("--evaluators", default="", metavar="M2,M3", help="independent models for the transfer metric")
    p.add_argument("--heldout", type=int, default=32, metavar="N", help="held-out transforms for robustness")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)

    p = sub.add_parser("entangle", help="how entangled classes are: p(class j | prototype of class i), feature cosine")
    p.add_argument("folder", type=Path, help="prototype images <class index>_*.png")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", help="feature layer (default: the pooled penultimate layer, e.g. _avg_pooling)")
    p.add_argument("--top", type=_positive_int, default=10, help="most entangled pairs to report (default 10)")
    p.add_argument("--out", type=Path, help="where entanglement.{csv,json,png} go (default: the folder)")
    _add_model_args(p)

    p = sub.add_parser("gallery", help="a static index.html of a run folder (images, settings, metrics, curves)")
    p.add_argument("folder", type=Path, help="run folder (searched recursively for *.png with a *.json)")
    p.add_argument("--out", type=Path, help="HTML file (default: FOLDER/index.html)")

    p = sub.add_parser("explain", help="attribution maps (saliency, IG, Grad-CAM, occlusion, mask...) for one image")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--class", dest="class_", action="append", metavar="C",
                   help="class index or name (default: the top-1 prediction); repeat for several classes")
    p.add_argument("--objective", "-o", metavar="SPEC", help="explain an objective instead, e.g. channel:_blocks.8:33")
    p.add_argument("--method", "-m", action="append", required=True, metavar="M",
                   help="mask|saliency|gradxinput|smoothgrad|ig|gradcam|guided-gradcam|occlusion (repeatable or a,b)")
    p.add_argument("--layer", help="Grad-CAM layer (default: the last Conv2d)")
    p.add_argument("--baseline", help="black|gray|blur|noise|mean or a value (defaults: ig black, occlusion 0, mask blur)")
    p.add_argument("--baseline-images", type=Path, metavar="DIR", help="folder for the mean-image baseline")
    p.add_argument("--steps", type=_positive_int, default=64, help="integrated-gradients path steps")
    p.add_argument("--samples", type=_positive_int, default=25, help="SmoothGrad noisy samples")
    p.add_argument("--noise", type=float, default=0.15, help="SmoothGrad noise, fraction of the value range")
    p.add_argument("--patch", type=_positive_int, default=16, help="occlusion patch size (px)")
    p.add_argument("--stride", type=_positive_int, default=8, help="occlusion stride (px)")
    p.add_argument("--mask-steps", type=_positive_int, default=100, help="feature-isolation optimization steps")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--format", choices=["npy", "safetensors"], default="npy", help="raw attribution file format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)

    p = sub.add_parser("filters", help="filter weights of a layer (default: the first conv); activation maps; renders")
    p.add_argument("model")
    p.add_argument("--layer", help="layer name (default: the first conv layer)")
    p.add_argument("--image", type=Path, help="also write the layer's top activation maps for this image")
    p.add_argument("--top", type=_positive_int, default=16, help="activation maps to show")
    p.add_argument("--render", type=int, default=0, metavar="N", help="also render channels 0..N-1 of the layer")
    p.add_argument("--steps", type=_positive_int, default=128, help="render steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)

    p = sub.add_parser("topk", help="the images of a folder that drive a channel (or neuron) most")
    p.add_argument("--model", required=True)
    p.add_argument("--layer", required=True)
    p.add_argument("--channel", required=True, type=int)
    p.add_argument("--images", required=True, type=Path, metavar="DIR")
    p.add_argument("-k", type=_positive_int, default=9)
    p.add_argument("--x", type=int, help="neuron column (with --y: rank one neuron instead of the channel mean)")
    p.add_argument("--y", type=int, help="neuron row")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    _add_model_args(p)
    p = sub.add_parser("invert", help="find a prompt that makes a language model emit TEXT (or drives a neuron)")
    p.add_argument("--model", required=True, help="smollm2-135m (offline), gpt2... (hub), a model folder or .gguf file")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", metavar="TEXT", help="the text the model should emit next")
    what.add_argument("--neuron", metavar="LAYER:INDEX", help="mlp.L:I | resid.L:I | MODULE:I (see fvis layers)")
    p.add_argument("--position", default="last", help="neuron position: last | all | an index (default: last)")
    p.add_argument("--length", type=int, default=3, help="prompt tokens K (default 3)")
    p.add_argument("--restarts", type=int, default=1, help="prompts optimized together (default 1)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--method", choices=["embed", "gcg"], default="embed")
    p.add_argument("--snap", choices=["cosine", "l2"], default=None, help="nearest-token metric (default l2)")
    p.add_argument("--snap-weight", type=float, default=None, help="snapping penalty weight (default 0)")
    p.add_argument("--lr", type=float, default=None, help="embed step size (default 10, normalized steps)")
    p.add_argument("--prefix", default="", help="fixed text before the prompt")
    p.add_argument("--suffix", default="", help="fixed text after the prompt")
    p.add_argument("--init", metavar="TEXT", help="start the first restart from this text (K tokens)")
    p.add_argument("--ascii-only", action="store_true", help="printable ASCII tokens only")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("sweep", help="run a TOML list of jobs into a resumable run folder (torchrun: split across ranks)")
    p.add_argument("config", type=Path, help="TOML: defaults (out, steps, size, seed, device, batch) and [[job]] tables")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="run folder (default: the config's out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def cmd_models(args) -> None:
    from .models import EFFICIENTNET_LITE, available

    for name in available():
        print(f"{name}\t{'offline weights' if name in EFFICIENTNET_LITE else 'torchvision (downloads once)'}")


def cmd_layers(args) -> None:
    import torch

    from .hooks import output_shapes
    from .models import load

    model = load(args.model, args.weights, args.device)
    h, w = args.size or model.input_size
    x = torch.full((1, model.channels, h, w), 0.5, device=args.device)
    rows = output_shapes(model, x)
    width = max(len(name) for name, *_ in rows)
    print(f"# {model.name}: input (1, {model.channels}, {h}, {w}) in [0, 1]; shapes are of one dry forward")
    for name, kind, shape, calls in rows:
        where = "(not called)" if calls == 0 else f"{shape}" + (f"  x{calls} calls (last shown)" if calls > 1 else "")
        print(f"{name:<{width}}  {kind:<24} {where}")


def cmd_render(args) -> None:
    import objectives

    from .io import check_writable
    from .models import load
    from .render import render, save_renders

    out = check_writable(args.out)
    model = load(args.model, args.weights, args.device)
    objs = [objectives.parse(spec, model.class_names) for spec in args.objective]
    settings = {"param": args.param, "size": list(args.size or model.input_size), "steps": args.steps,
                "lr": args.lr, "optimizer": args.optimizer, "decay_power": args.decay_power,
                "seed": args.seed, "transforms": not args.no_transforms, "weights": args.weights,
                "device": args.device, "channels_last": "no" if args.no_channels_last else "auto"}
    result = render(model, objs, param=args.param, size=args.size, steps=args.steps, lr=args.lr,
                    seed=args.seed, transforms=not args.no_transforms, decay_power=args.decay_power,
                    optimizer=args.optimizer, progress=not args.quiet,
                    channels_last=False if args.no_channels_last else None)
    save_renders(result, model, args.objective, out, settings)
    for spec, value in zip(args.objective, result.values):
        print(f"{spec}\tobjective {float(value):.4g}")
    note = f", stopped early: {result.stopped}" if result.stopped else ""
    print(f"{len(objs)} image(s) in {out}/ ({result.steps} steps, {result.seconds:.1f} s, "
          f"{result.seconds_per_step:.3f} s/step{note})")


def cmd_attack(args) -> None:
    from .attack import attack_files
    from .classes import resolve_class
    from .io import check_writable, list_images
    from .models import load

    if args.eot < 0:
        raise FvisError(f"--eot must be >= 0, got {args.eot}")
    paths = list_images(args.images) if args.images else args.image
    out = check_writable(args.out)
    model = load(args.model, args.weights, args.device)
    names = model.class_names
    target = None if args.untargeted else resolve_class(args.target, names)
    label = resolve_class(args.label, names) if args.label is not None else None
    if label is not None and not args.untargeted:
        raise FvisError("--label is for --untargeted attacks")
    report = attack_files(
        model, paths, out, target=target, label=label, batch_size=args.batch_size, heldout=args.heldout,
        progress=not args.quiet, eps=args.eps, norm=args.norm, steps=args.steps, step_size=args.step_size,
        method=args.method, loss=args.loss, restarts=args.restarts, random_start=not args.no_random_start,
        eot=args.eot, early_stop=not args.no_early_stop, kappa=args.kappa, seed=args.seed)
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


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_folder, markdown
    from .io import check_writable
    from .models import load

    if args.transforms < 0:
        raise FvisError(f"--transforms must be >= 0, got {args.transforms}")
    if not args.folder.is_dir():
        raise FvisError(f"not a folder: {args.folder}")
    check_writable(args.out or args.folder)
    model = load(args.model, args.weights, args.device)
    evaluators = [load(name.strip(), device=args.device) for name in args.evaluators.split(",") if name.strip()]
    if args.reference is not None and not args.reference.is_dir():
        raise FvisError(f"not a folder: {args.reference}")
    report = evaluate_folder(args.folder, model, evaluators, args.transforms, args.seed, args.out,
                             reference=args.reference)
    print(markdown(report), end="")


def cmd_prototype(args) -> None:
    from .classes import resolve_class
    from .io import check_writable, list_images
    from .models import load
    from .prototype import make_prototypes, save_prototypes
    from .recipes import get_recipe

    if args.heldout < 0:
        raise FvisError(f"--heldout must be >= 0, got {args.heldout}")
    layers = args.match_layers
    if layers is not None and layers not in ("per-block", "all"):
        layers = layers.split(",")
    recipe = get_recipe(args.recipe or DEFAULT_RECIPE).replace(  # every check of the settings, before any work
        steps=args.steps, match=args.match, match_stat=args.match_stat, match_over=args.match_over,
        match_ratio=args.match_ratio, match_layers=layers, param=args.param, init=args.init, coarse=args.coarse,
        flip=args.flip, high_freq=args.high_freq, tv=args.tv, l2=args.l2, lr=args.lr, diversity=args.diversity)
    if recipe.match.startswith("images:"):
        list_images(recipe.match.split(":", 1)[1])  # the folder exists and holds images
    if args.reference is not None:
        list_images(args.reference)
    out = check_writable(args.out)
    model = load(args.model, args.weights, args.device)
    classes = [resolve_class(c.strip(), model.class_names) for c in args.classes.split(",") if c.strip()]
    if not classes:
        raise FvisError("--classes is empty")
    evaluators = [load(name.strip(), device=args.device) for name in args.evaluators.split(",") if name.strip()]
    protos = make_prototypes(model, classes, recipe=recipe, per_class=args.per_class, size=args.size, seed=args.seed,
                             reference=args.reference, evaluators=evaluators, heldout=args.heldout,
                             progress=not args.quiet)
    save_prototypes(protos, out)
    print(f"{'image':<32} {'clean_p':>7} {'robust':>6} {'transfer':>8} {'hfer':>6} {'natural':>7}")
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for p in protos:
        m, n = p.metrics, p.metrics["naturalness"]
        print(f"{p.stem + '.png':<32} {fmt(m['clean_p']):>7} {fmt(m['robustness']):>6} {fmt(m['transfer']):>8} "
              f"{fmt(m['hfer']):>6} {n['natural_in_range']:>4}/{n['natural_total']}")
    print(f"{len(protos)} prototype(s) in {out}/ (recipe {recipe.name}, {protos[0].seconds:.1f} s each; "
          f"index.json, contact_sheet.png)")


def cmd_entangle(args) -> None:
    from .entangle import run_cli

    run_cli(args)


def cmd_gallery(args) -> None:
    from .gallery import run_cli

    run_cli(args)


def cmd_explain(args) -> None:
    from .explain import run_cli

    run_cli(args)


def cmd_filters(args) -> None:
    from .inspect import run_filters_cli

    run_filters_cli(args)


def cmd_topk(args) -> None:
    from .inspect import run_topk_cli

    run_topk_cli(args)


def cmd_invert(args) -> None:
    from .invert import run_cli

    run_cli(args)


def cmd_sweep(args) -> None:
    from .sweep import sweep

    sweep(args.config, args.out, progress=not args.quiet)


COMMANDS = {"models": cmd_models, "layers": cmd_layers, "render": cmd_render, "attack": cmd_attack, "evaluate": cmd_evaluate,
            "explain": cmd_explain, "filters": cmd_filters, "topk": cmd_topk,
            "invert": cmd_invert, "sweep": cmd_sweep, "prototype": cmd_prototype, "entangle": cmd_entangle, "gallery": cmd_gallery}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()  # CPU steps reuse freed tensor memory (see fvis.allocator; FVIS_MALLOC=default: off)
    try:
        COMMANDS[args.command](args)
    except FvisError as e:
        print(f"fvis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fvis: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
