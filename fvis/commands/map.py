"""``fvis map``: a 2-D map of a layer's pooled activations over a folder of images."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..datasets import warnings_as_lines
from ..features.embed import METHODS
from ..features.maps import LABELS, feature_map, save_map
from ..files import check_writable, list_images
from ._args import MODEL_HELP, add_model_args, add_run_args, load_model, positive_int

HELP = "map of a feature space: PCA / t-SNE / UMAP of a layer's pooled activations over a folder"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--layer", required=True, help="layer whose pooled (spatial mean) activations are mapped")
    p.add_argument("--images", required=True, type=Path, help="folder of images (unreadable files are skipped)")
    p.add_argument("--method", choices=METHODS, default="tsne", help="embedding (umap needs umap-learn)")
    p.add_argument("--labels", choices=LABELS, default="from-names",
                   help="colour by the file name (up to the first _) or by the model's top-1 class")
    p.add_argument("--views", type=positive_int, default=1,
                   help="views per image: the centre crop plus views-1 seeded random crops/flips")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward")
    p.add_argument("--max-thumbnails", type=positive_int, default=120,
                   help="draw thumbnails up to this many points, a colour-coded scatter above")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    add_run_args(p)
    add_model_args(p)


def run(args) -> None:
    list_images(args.images)  # missing or empty folder: one clear line before loading the model
    out = check_writable(args.out)
    model = load_model(args)
    with warnings_as_lines():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")  # the model package's noise
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
