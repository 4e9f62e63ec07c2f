"""Prototype quality benchmark (issue 3): Lucent's recipe vs fvis prototypes with each
activation-matching source, on the same classes and seeds, EfficientNet-Lite0 generating,
Lite1 and Lite2 evaluating. Prints and writes results/prototype/bench_prototype.{md,json} and one
contact sheet per recipe.

    python scripts/bench_prototype.py                       # 20 classes, 512 steps (CPU: long)
    python scripts/bench_prototype.py --classes 4 --steps 64 --out /tmp/quick   # smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import fvis
from fvis.io import contact_sheet, save_image, write_json
from fvis.prototype import make_prototypes

# 20 classes spread across ImageNet (birds, mammals, insects, objects, food, scenes)
CLASSES = [11, 94, 130, 207, 281, 292, 301, 323, 340, 107, 404, 437, 483, 555, 963, 949, 950, 980, 985, 967]

RECIPES = {  # name -> make_prototypes options (extend with --recipe NAME:key=value,key=value)
    "lucent": dict(match="none", init="random", tv=0.0, high_freq=0.0),   # Fourier + standard transforms
    "fvis-none": dict(match="none"),                                       # fvis defaults without matching
    "fvis-bn": dict(match="bn"),
    "fvis-images": dict(match="images:{reference}"),
    "fvis-maco-bn": dict(match="bn", param="maco"),
}


def reference_folder(folder: Path) -> Path:
    """Natural reference images from the offline sample photos: crops and flips of each."""
    import matplotlib
    import skimage.data
    from torchvision.transforms.v2 import functional as F

    photos = {n: torch.from_numpy(getattr(skimage.data, n)().copy())[..., :3].permute(2, 0, 1).float() / 255
              for n in ("astronaut", "chelsea", "coffee", "rocket")}
    photos["grace_hopper"] = fvis.io.load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    labels = {"chelsea": 285, "coffee": 967, "rocket": 657}  # Lite0's reading of these photos
    for name, im in photos.items():
        for i, side in enumerate((224, 288, 352)):
            r = F.resize(im, [side], antialias=True)
            crop = F.center_crop(r, [224, 224])
            for flip in (0, 1):
                stem = f"{labels[name]}_{name}" if name in labels else name
                save_image(crop.flip(-1) if flip else crop, folder / f"{stem}_{i}{flip}.png")
    return folder


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=len(CLASSES), help="how many of the 20 classes")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evaluators", default="efficientnet-lite1,efficientnet-lite2")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "prototype")
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME:BASE:k=v,...",
                    help="an extra recipe: BASE's options with some changed (numbers parsed), e.g. bn3:fvis-bn:match_ratio=3")
    args = ap.parse_args(argv)
    args.extra = {}
    for spec in args.recipe:
        name, base, kv = (spec.split(":", 2) + [""])[:3]
        RECIPES[name] = dict(RECIPES[base])
        args.extra[name] = {k: _value(v) for k, v in (p.split("=", 1) for p in kv.split(",") if p)}
        if name not in args.recipes.split(","):
            args.recipes += f",{name}"
    classes = CLASSES[:args.classes]
    model = fvis.load("efficientnet-lite0", device=args.device)
    evaluators = [fvis.load(name, device=args.device) for name in args.evaluators.split(",")]
    reference = reference_folder(Path(tempfile.mkdtemp(prefix="fvis-ref-")))
    rows, images = [], {}
    recipe_opts = {}
    for name in args.recipes.split(","):
        opts = {k: (v.format(reference=reference) if isinstance(v, str) else v) for k, v in RECIPES[name].items()}
        opts.update(args.extra.get(name, {}))
        recipe_opts[name] = opts
        # untimed warm-up: the first run in a process pays one-off costs (oneDNN kernel set-up, allocator
        # growth; measured 20-40% of a 128-step run), and images:DIR fills its statistics cache here
        make_prototypes(model, classes[:1], steps=2, seed=args.seed, heldout=0, cache=reference / ".cache",
                        progress=False, **opts)
    for name, opts in recipe_opts.items():
        t = time.perf_counter()
        protos = make_prototypes(model, classes, steps=args.steps, seed=args.seed, evaluators=evaluators,
                                 cache=reference / ".cache", progress=not args.quiet, **opts)
        wall = time.perf_counter() - t
        mean = lambda k: sum(p.metrics[k] for p in protos) / len(protos)  # noqa: E731
        rows.append({"recipe": name, "clean_p": mean("clean_p"), "robustness": mean("robustness"),
                     "transfer": mean("transfer"), "hfer": mean("hfer"),
                     "s_per_prototype": protos[0].seconds, "wall_s": wall, "options": opts,
                     "match_weight": protos[0].settings["match_weight"],
                     "per_class": {p.cls: p.metrics for p in protos}})
        images[name] = protos
        r = rows[-1]
        print(f"{name:14s} clean_p {r['clean_p']:.3f} robust {r['robustness']:.3f} transfer {r['transfer']:.3f} "
              f"hfer {r['hfer']:.3f} {r['s_per_prototype']:.2f} s/prototype", flush=True)
    base = next((r["s_per_prototype"] for r in rows if r["recipe"] == "lucent"), None)
    lines = [f"EfficientNet-Lite0, {len(classes)} classes {classes}, {args.steps} steps, seed {args.seed}, "
             f"device {args.device} ({torch.get_num_threads()} threads); evaluators {args.evaluators}; "
             f"32 held-out transforms.", "",
             "| recipe | clean_p | robustness | transfer | HFER | s / prototype | time vs lucent |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['s_per_prototype'] / base:.2f}x" if base else ""
        lines.append(f"| {r['recipe']} | {r['clean_p']:.3f} | {r['robustness']:.3f} | {r['transfer']:.3f} | "
                     f"{r['hfer']:.3f} | {r['s_per_prototype']:.2f} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_prototype.md").write_text(table + f"\nCommand: python scripts/bench_prototype.py {' '.join(argv or sys.argv[1:])}\n")
    write_json({"classes": classes, "steps": args.steps, "seed": args.seed, "device": args.device, "rows": rows},
               args.out / "bench_prototype.json")
    for name, protos in images.items():
        contact_sheet([p.image for p in protos],
                      [f"{p.name} p={p.metrics['clean_p']:.2f} t={p.metrics['transfer']:.1f}" for p in protos],
                      args.out / f"{name}.png", columns=10, tile=128)
    return 0


if __name__ == "__main__":
    sys.exit(main())
