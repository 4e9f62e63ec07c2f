"""``fvis map``: a 2-D map of a layer's pooled activations over a folder of images."""
from __future__ import annotations

from ..features.embed import METHODS
from ..features.maps import LABELS, feature_map, save_map
from ._args import (add_folder_command_args, add_folder_inputs, folder_out_model, positive_int,
                    warnings_as_lines_quiet_model)

HELP = "map of a feature space: PCA / t-SNE / UMAP of a layer's pooled activations over a folder"


def add_arguments(p) -> None:
    add_folder_inputs(p, "layer whose pooled (spatial mean) activations are mapped")
    p.add_argument("--method", choices=METHODS, default="tsne", help="embedding (umap needs umap-learn)")
    p.add_argument("--labels", choices=LABELS, default="from-names",
                   help="colour by the file name (up to the first _) or by the model's top-1 class")
    p.add_argument("--views", type=positive_int, default=1,
                   help="views per image: the centre crop plus views-1 seeded random crops/flips")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward")
    p.add_argument("--max-thumbnails", type=positive_int, default=120,
                   help="draw thumbnails up to this many points, a colour-coded scatter above")
    add_folder_command_args(p)


def run(args) -> None:
    out, model = folder_out_model(args)
    with warnings_as_lines_quiet_model():
        fmap = feature_map(model, args.images, args.layer, method=args.method, labels=args.labels, views=args.views,
                           seed=args.seed, batch_size=args.batch_size, cache=False if args.no_cache else None,
                           progress=not args.quiet)
    settings = {"method": args.method, "labels": args.labels, "views": args.views, "seed": args.seed,
                "weights": args.weights}
    save_map(fmap, args.images, out, model, args.max_thumbnails, settings=settings)
    acts = fmap.acts
    print(f"{acts.summary()}{' (cached)' if acts.cached else ''}; activations {acts.seconds:.1f} s, "
          f"{args.method} {fmap.seconds_embed:.1f} s")
    print(f"-> {out}/map.{{csv,json,png}}")
