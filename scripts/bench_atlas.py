"""Activation atlas and feature maps of EfficientNet-Lite0 on the offline photos (with seeded
crops/flips), and the cost of rendering atlas cells batched vs one cell at a time.

    python scripts/bench_atlas.py --out results/atlas

Writes atlas.png, density.png, cells.json (fvis.features.save_atlas) and bench.md (timings, the
command); maps.png (early vs late layer, side by side, the photos and a grey copy of each),
map_<layer>/ (map.csv, map.json, map.png) and maps.md."""
from __future__ import annotations

import argparse
import os
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import fvis
from fvis.features import atlas, feature_map, save_atlas, save_map
from fvis.features.atlas import render_directions
from fvis.features.maps import plot_map
from fvis.files import atomic_write, save_image

sys.path.insert(0, str(Path(__file__).parent))
from photos import offline_photos  # noqa: E402


def silhouette(values: torch.Tensor, labels: list[str], metric: str = "cosine") -> float:
    from sklearn.metrics import silhouette_score
    return float(silhouette_score(values.numpy(), labels, metric=metric))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/atlas"))
    p.add_argument("--layer", default="_blocks.10")
    p.add_argument("--grid", type=int, default=12)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--positions", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--timing-steps", type=int, default=24, help="steps of each timed render (per-step cost is flat)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (medians reported)")
    p.add_argument("--map-layers", default="_blocks.2,_blocks.15")
    p.add_argument("--map-views", type=int, default=6)
    p.add_argument("--map-methods", default="tsne,umap", help="embeddings of the maps part, one row of panels each "
                   "(umap needs umap-learn)")
    p.add_argument("--parts", default="maps,atlas", help="what to run: maps, atlas or both")
    p.add_argument("--save-photos", type=Path, metavar="DIR",
                   help="only write the 7 offline photos as PNGs into DIR (for `fvis map/atlas --images DIR`)")
    args = p.parse_args()
    if args.save_photos:
        for name, im in offline_photos().items():
            save_image(im, args.save_photos / f"{name}.png")
        return
    torch.set_num_threads(1)
    model = fvis.load("efficientnet-lite0")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    header = f"Command: `python scripts/bench_atlas.py {' '.join(sys.argv[1:])}` (CPU cores {sorted(os.sched_getaffinity(0))}, " \
             f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the start; " \
             "timing ratios come from interleaved rounds, medians)."
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        for name, im in offline_photos().items():
            save_image(im, folder / f"{name}.png")
        cache = Path(tmp) / "cache"  # fresh: the collection time is measured, not read from a cache
        if "maps" in parts:
            gray = Path(tmp) / "photos_gray"
            for name, im in offline_photos().items():
                save_image(im, gray / f"{name}.png")
                save_image(im.mean(0, keepdim=True).expand(3, -1, -1), gray / f"{name}_gray.png")
            maps(model, gray, cache, out, args, header)
        if "atlas" in parts:
            atlas_bench(model, folder, cache, out, args, header)


def cross_colour_neighbours(fmap) -> float:
    """Share of grey views whose nearest other-file view (cosine, in feature space) is of the same photo."""
    v = torch.nn.functional.normalize(fmap.acts.values, dim=1)
    files = [fmap.acts.files[i] for i in fmap.acts.image.tolist()]
    sim = v @ v.T
    same_file = torch.tensor([[a == b for b in files] for a in files])
    sim[same_file] = -2
    nearest = sim.argmax(1)
    grey = [i for i, f in enumerate(files) if f.endswith("_gray.png")]
    return sum(fmap.labels[i] == fmap.labels[int(nearest[i])] for i in grey) / len(grey)


def maps(model, folder: Path, cache: Path, out: Path, args, header: str) -> None:
    from matplotlib.figure import Figure

    from fvis.features.embed import check_method

    methods = args.map_methods.split(",")
    for method in methods:
        check_method(method)
    layers = args.map_layers.split(",")
    names = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
    fig = Figure(figsize=(16, 7.5 * len(methods)), dpi=100)
    axes = fig.subplots(len(methods), len(layers), squeeze=False)
    lines = ["# Feature maps of EfficientNet-Lite0: an early vs a late layer", "", header, "",
             f"{' and '.join(names.get(m, m) for m in methods)} of pooled activations of the 7 offline photos and a "
             f"grey copy of each (14 images) x {args.map_views} views (the centre crop and seeded random crops/flips); "
             "label = the photo, so a grey copy carries its photo's label. Silhouette (by photo) in the layer's "
             "feature space (cosine) and in the 2-D map; grey -> colour: share of grey views whose nearest view "
             "from another file (cosine, feature space) is of the same photo (i.e. its colour copy) rather than "
             "of another grey photo or another photo. Embedding seconds include the first call's compilation "
             "(UMAP's numba JIT) where there is one.", "",
             "| layer | method | collect s | embed s | silhouette, features | silhouette, 2-D map | grey -> colour |",
             "|---|---|---|---|---|---|---|"]
    for row, method in zip(axes, methods):
        for ax, layer in zip(row, layers):
            fmap = feature_map(model, folder, layer, method=method, views=args.map_views, cache=cache)
            save_map(fmap, folder, out / (f"map_{layer}" if method == "tsne" else f"map_{layer}_{method}"), model)
            plot_map(fmap, folder, None, model, title=f"{layer}: {names.get(method, method)} ({len(fmap.xy)} views)",
                     ax=ax)
            s_feat = silhouette(fmap.acts.values, fmap.labels)
            s_map = silhouette(fmap.xy, fmap.labels, "euclidean")
            lines.append(f"| {layer} | {method} | {fmap.acts.seconds:.2f} | {fmap.seconds_embed:.2f} | {s_feat:.3f} | "
                         f"{s_map:.3f} | {cross_colour_neighbours(fmap):.2f} |")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(out / "maps.png", lambda f: f.write(buf.getvalue()))
    (out / "maps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def atlas_bench(model, folder: Path, cache: Path, out: Path, args, header: str) -> None:
    lines = ["# Activation atlas of EfficientNet-Lite0 on the offline photos", "", header, ""]
    # the atlas
    t = time.perf_counter()
    result = atlas(model, folder, args.layer, grid=args.grid, min_count=args.min_count, steps=args.steps,
                   size=args.size, views=args.views, positions=args.positions, batch_size=args.batch_size,
                   cache=cache, progress=False)
    total = time.perf_counter() - t
    save_atlas(result, out, model)
    s = result.seconds
    k = len(result.cells)
    lines += [f"## Atlas of {args.layer}", "",
              f"{len(result.acts.files)} photos x {args.views} views x {args.positions} positions = "
              f"{len(result.acts.values)} activation vectors ({result.acts.values.shape[1]} channels, "
              f"{result.acts.grid[0]}x{result.acts.grid[1]} map); t-SNE layout; {args.grid}x{args.grid} grid; "
              f"{k} cells with >= {args.min_count} activations rendered at {args.size} px, {args.steps} steps, "
              f"batch {args.batch_size}.", "",
              "| stage | seconds |", "|---|---|",
              f"| collect activations ({len(result.acts.files) * args.views} views) | {s['activations']:.1f} |",
              f"| t-SNE layout of {len(result.acts.values)} vectors | {s['embed']:.1f} |",
              f"| class effects (forward-mode, {k} cells x {result.settings['bases']} base images) | "
              f"{s['class_effects']:.1f} |",
              f"| render {k} cells (optimization steps, {-(-k // args.batch_size)} batched runs) | {s['render']:.1f} |",
              f"| whole atlas() call | {total:.1f} |", ""]

    # batched vs alone, interleaved rounds
    dirs = result.directions[:args.batch_size]
    batched, alone, batched_cpu, alone_cpu = [], [], [], []
    for r in range(args.rounds):
        c = time.process_time()
        _, _, sec = render_directions(model, args.layer, dirs, size=args.size, steps=args.timing_steps,
                                      batch_size=len(dirs), seed=r)
        batched_cpu.append((time.process_time() - c) / len(dirs))
        batched.append(sec / len(dirs))
        c = time.process_time()
        _, _, sec = render_directions(model, args.layer, dirs[r % len(dirs):r % len(dirs) + 1], size=args.size,
                                      steps=args.timing_steps, batch_size=1, seed=r)
        alone_cpu.append(time.process_time() - c)
        alone.append(sec)
    b, a = statistics.median(batched), statistics.median(alone)
    bc, ac = statistics.median(batched_cpu), statistics.median(alone_cpu)
    lines += [f"## Seconds per rendered cell, batched ({len(dirs)} cells per run) vs alone", "",
              f"{args.rounds} interleaved rounds of {args.timing_steps} steps at {args.size} px (per-step cost "
              "does not depend on the step count; multiply by steps/timing steps for full renders).", "",
              "Wall: the optimization steps only (engine's loop time); CPU: the process's CPU time of the "
              "whole call (set-up and final evaluation included), less disturbed by the other jobs on the core.",
              "", "| | wall s per cell (median) | rounds | CPU s per cell (median) | rounds |",
              "|---|---|---|---|---|",
              f"| batched | {b:.4f} | {', '.join(f'{x:.4f}' for x in batched)} | {bc:.4f} | "
              f"{', '.join(f'{x:.4f}' for x in batched_cpu)} |",
              f"| alone | {a:.4f} | {', '.join(f'{x:.4f}' for x in alone)} | {ac:.4f} | "
              f"{', '.join(f'{x:.4f}' for x in alone_cpu)} |",
              f"| speed-up per cell | {a / b:.2f}x | | {ac / bc:.2f}x | target >= 4x |", ""]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
