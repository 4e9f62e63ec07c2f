"""``fvis filters``: filter weights of a layer (default: the first conv); activation maps; renders."""
from __future__ import annotations

from pathlib import Path

import objectives

from ..errors import FvisError
from ..files import check_writable, load_image, save_image, versions, write_json
from ..hooks import resolve_layers
from ..inspection import activation_maps, activation_sheet, filter_view, first_conv
from ..naming import slug
from ..render import render, save_renders
from ._args import MODEL_HELP, add_model_args, add_run_args, load_model, positive_int

HELP = "filter weights of a layer (default: the first conv); activation maps; renders"


def add_arguments(parser) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--layer", help="layer name (default: the first conv layer)")
    parser.add_argument("--image", type=Path, help="also write the layer's top activation maps for this image")
    parser.add_argument("--top", type=positive_int, default=16, help="activation maps to show")
    parser.add_argument("--render", type=int, default=0, metavar="N", help="also render channels 0..N-1 of the layer")
    parser.add_argument("--steps", type=positive_int, default=128, help="render steps")
    add_run_args(parser)
    add_model_args(parser)


def run(args) -> None:
    """``fvis filters``: the weights of a layer; with ``--image`` its activation maps, with
    ``--render N`` feature visualizations of its first N channels (:func:`fvis.render.render`)."""
    out = check_writable(args.out)
    model = load_model(args)
    layer = args.layer or first_conv(model)
    resolve_layers(model, [layer])
    image = load_image(args.image, model.input_size, model.channels) if args.image else None
    name = slug(layer)
    written = []
    try:
        view = filter_view(model, layer)
    except FvisError:
        if image is None and not args.render:
            raise
        view = None  # a layer without weights (e.g. a block) can still show activations / renders
    if view is not None:
        written.append(save_image(view.image, out / f"filters_{name}.png"))
        written.append(write_json({"model": model.name, "layer": layer, "kind": view.kind,
                                   "weight_shape": list(view.shape), "filters_shown": view.shown,
                                   "versions": versions()}, out / f"filters_{name}.json"))
        print(f"{layer}: weight {tuple(view.shape)} shown as {view.kind} ({view.shown} filters) -> filters_{name}.png")
    if image is not None:
        maps = activation_maps(model, image, layer, args.top)
        written.append(activation_sheet(maps, image, out / f"activations_{name}.png"))
        top = [{"channel": int(c), "mean": float(m)} for c, m in zip(maps.channels, maps.means)]
        written.append(write_json({"model": model.name, "layer": layer, "image": str(args.image), "top": top},
                                  out / f"activations_{name}.json"))
        print(f"top channels of {layer} for {args.image}: " + ", ".join(f"{int(c)}" for c in maps.channels))
    if args.render:
        specs = [f"channel:{layer}:{c}" for c in range(args.render)]
        objs = [objectives.parse(s, model.class_names) for s in specs]
        result = render(model, objs, steps=args.steps, seed=args.seed, progress=not args.quiet)
        written += save_renders(result, model, specs, out / f"renders_{name}",
                                {"steps": args.steps, "seed": args.seed, "param": "fourier", "transforms": True})
        print(f"rendered channels 0..{args.render - 1} of {layer} ({args.steps} steps) -> renders_{name}/")
    print(f"{len(written)} files in {out}/")
