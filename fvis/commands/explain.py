"""``fvis explain``: attribution maps (saliency, IG, Grad-CAM, occlusion, mask...) for one image."""
from __future__ import annotations

from pathlib import Path

import objectives

from ..attribution import METHODS, check_cam_layer, explain, gap_linear_head, save_attributions
from ..attribution.integrated_gradients import STEPS as IG_STEPS
from ..attribution.isolate import STEPS as MASK_STEPS
from ..baselines import make_baseline
from ..classes import resolve_class
from ..datasets import warnings_as_lines
from ..errors import FvisError, suggest
from ..files import check_writable, load_image
from ._args import MODEL_HELP, add_model_args, add_run_args, load_model, positive_int

HELP = "attribution maps (saliency, IG, Grad-CAM, CAM, occlusion, mask...) for one image"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--image", required=True, type=Path, help="image file")
    parser.add_argument("--class", dest="class_", action="append", metavar="C",
                        help="class index or name (default: the top-1 prediction); repeat for several classes")
    parser.add_argument("--objective", "-o", metavar="SPEC", help="explain an objective instead, e.g. channel:_blocks.8:33")
    parser.add_argument("--method", "-m", action="append", required=True, metavar="M",
                        help="mask|saliency|gradxinput|smoothgrad|ig|gradcam|guided-gradcam|cam|occlusion (repeatable or a,b)")
    parser.add_argument("--layer", help="Grad-CAM layer (default: the last Conv2d)")
    parser.add_argument("--baseline", help="black|gray|blur|noise|mean or a value (defaults: ig black, occlusion 0, mask blur)")
    parser.add_argument("--baseline-images", type=Path, metavar="DIR", help="folder for the mean-image baseline")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"integrated-gradients path points (default: {IG_STEPS})")
    parser.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad noisy samples")
    parser.add_argument("--noise", type=float, default=0.15, help="SmoothGrad noise, fraction of the value range")
    parser.add_argument("--patch", type=positive_int, default=16, help="occlusion patch size (px)")
    parser.add_argument("--stride", type=positive_int, default=8, help="occlusion stride (px)")
    parser.add_argument("--mask-steps", type=positive_int, default=None,
                        help=f"feature-isolation optimization steps (default: {MASK_STEPS})")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    parser.add_argument("--format", choices=["npy", "safetensors"], default="npy", help="raw attribution file format")
    add_run_args(parser)
    add_model_args(parser)


def _baseline_arg(text: str | None):
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def run(args) -> None:
    """``fvis explain``: every requested method on one image; files as :func:`save_attributions`."""
    methods = [m.strip() for spec in args.method for m in spec.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise FvisError(f"unknown method {m!r}.{suggest(m, METHODS)} Choose from {', '.join(METHODS)}")
    if args.objective and args.class_ is not None:
        raise FvisError("give --class or --objective, not both")
    if args.objective and "cam" in methods:
        raise FvisError("CAM explains class logits, not objectives; use --method gradcam for an objective")
    out = check_writable(args.out)
    model = load_model(args)
    image = load_image(args.image, model.input_size, model.channels)
    with warnings_as_lines():
        _run(args, methods, out, model, image)


def _run(args, methods, out, model, image) -> None:
    classes = args.class_ or []
    if args.objective:
        target = objectives.parse(args.objective, model.class_names)
    else:  # one batch item per class (same image): one run per method for all classes
        target = [resolve_class(c, model.class_names) for c in classes] if len(classes) > 1 else (classes or [None])[0]
    x = image[None].expand(max(len(classes), 1), -1, -1, -1).to(args.device)
    baseline = _baseline_arg(args.baseline)
    if baseline is not None:  # validate (and read a mean image) once, before any long work
        baseline = make_baseline(x, baseline, seed=args.seed, folder=args.baseline_images)
    if any(m in ("gradcam", "guided-gradcam") for m in methods):
        check_cam_layer(model, x, args.layer)
    if "cam" in methods:  # the head is found by inspection: refuse a model without it before any work
        gap_linear_head(model)
    options = dict(layer=args.layer, baseline=baseline, baseline_images=args.baseline_images, steps=args.steps,
                   samples=args.samples, noise=args.noise, patch=args.patch, stride=args.stride,
                   batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    results = []
    for m in methods:
        opts = dict(options, steps=args.mask_steps) if m == "mask" else options
        a = explain(model, x, m, target, **opts)
        if baseline is not None and "baseline" in a.settings:
            a.settings["baseline"] = args.baseline
        results.append(a)
        for i in range(a.raw.shape[0]):
            cls = int(a.target[i])
            what = f"objective {args.objective}" if cls < 0 else (
                f"class {cls} {model.class_names[cls]}" if model.class_names else f"class {cls}")
            extra = ""
            if "relative_gap" in a.info:
                extra = (f"  completeness gap {float(a.info['completeness_gap'][i]):+.4f} "
                         f"({float(a.info['relative_gap'][i]):.2%} of f(x) - f(baseline))")
            if "kept" in a.info:
                extra = f"  kept {float(a.info['kept'][i]):.2f} of the score with {float(a.info['area'][i]):.1%} of the image"
            print(f"{m:<15} {what}  score {float(a.score[i]):.4g}{extra}  {a.seconds:.1f} s")
    meta = {"model": model.name, "image": str(args.image), "target": args.objective or classes or None}
    written = save_attributions(results, image, out, meta=meta, fmt=args.format, class_names=model.class_names)
    print(f"{len(written)} files in {out}/")
