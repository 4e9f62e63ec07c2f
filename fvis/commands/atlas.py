"""``fvis atlas``: an activation atlas of a layer over a folder of images."""
from __future__ import annotations

from ..features.atlas import atlas, save_atlas
from ..features.embed import METHODS
from ._args import (add_folder_command_args, add_folder_inputs, folder_out_model, positive_int,
                    warnings_as_lines_quiet_model)

HELP = "activation atlas: a layer's spatial activations laid out in 2-D, each grid cell's mean rendered"


def add_arguments(p) -> None:
    add_folder_inputs(p, "a layer with a spatial (channels x height x width) output")
    p.add_argument("--grid", type=positive_int, default=16, help="cells per side of the atlas")
    p.add_argument("--min-count", type=positive_int, default=3, help="activations a cell needs to be rendered")
    p.add_argument("--steps", type=positive_int, default=256, help="optimization steps per cell")
    p.add_argument("--size", type=positive_int, default=96, help="rendered cell size in pixels")
    p.add_argument("--views", type=positive_int, default=16,
                   help="views per image: the centre crop plus views-1 seeded random crops/flips")
    p.add_argument("--positions", type=positive_int, default=16, help="random map positions sampled per view")
    p.add_argument("--method", choices=METHODS, default="tsne", help="2-D layout (umap needs umap-learn)")
    p.add_argument("--class", dest="cls", metavar="C",
                   help="only cells whose direction has class C (index or name) among the classes it raises most")
    p.add_argument("--class-top", type=positive_int, default=10, help="how many top raised classes --class looks at")
    p.add_argument("--batch-size", type=positive_int, default=32, help="cells rendered together in one run")
    add_folder_command_args(p)


def run(args) -> None:
    out, model = folder_out_model(args)
    with warnings_as_lines_quiet_model():
        result = atlas(model, args.images, args.layer, grid=args.grid, min_count=args.min_count, steps=args.steps,
                       size=args.size, views=args.views, positions=args.positions, method=args.method,
                       cls=args.cls, class_top=args.class_top, batch_size=args.batch_size, seed=args.seed,
                       cache=False if args.no_cache else None, progress=not args.quiet)
    save_atlas(result, out, model)
    s = result.seconds
    print(f"{result.acts.summary()}{' (cached)' if result.acts.cached else ''}")
    print(f"{len(result.cells)} of {args.grid * args.grid} cells rendered (>= {args.min_count} activations); "
          f"activations {s['activations']:.1f} s, {args.method} {s['embed']:.1f} s, class effects "
          f"{s['class_effects']:.1f} s, rendering {s['render']:.1f} s ({s['render_per_cell']:.2f} s/cell)")
    print(f"-> {out}/atlas.png, density.png, cells.json")
