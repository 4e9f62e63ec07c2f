"""Prototype recipes side by side (issue 17): EfficientNet-Lite0 generating, Lite1 and Lite2
judging, on 20 classes that no recipe was tuned on, at equal wall time per prototype.

Per recipe: clean p, robustness, transfer, transfer under the held-out transforms and under a
family apart from the training transforms (colour, resolution, JPEG, noise; the default
`colour-shift` trains on colour shifts, which overlap its colour part), HFER, the
naturalness statistics (share of images inside the offline photos' range), seconds per prototype,
one labelled contact sheet, and a blind-test folder (unlabelled images in shuffled order, 30
candidate names per image; the answer key is kept apart). Writes results/prototype/.

    python scripts/bench_prototype.py --seconds 30                  # ~30 s of CPU per prototype
    python scripts/bench_prototype.py --classes 4 --seconds 3 --out /tmp/quick   # smoke run

``vital`` matches the sorted activations of the offline photos' crops (real images, as VITAL does);
``accentuate`` starts from a crop of grace_hopper.jpg (a photo of none of the classes).

Steps per recipe = (the time budget - the recipe's fixed set-up) / its seconds per step, both
measured on short timed runs of the same batch first (so costlier recipes get fewer steps, as a
user with a deadline would).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

import fvis
from fvis.classes import imagenet_classes
from fvis.io import contact_sheet, save_image, write_json
from fvis.naturalness import photo_ranges
from fvis.prototype import make_prototypes
from fvis.recipes import RECIPES
from photos import LABELS, photo_crops

ROOT = Path(__file__).resolve().parents[1]
# 20 classes nobody tuned on (the recipes were tried on TUNED)
CLASSES = [1, 9, 22, 71, 100, 145, 250, 291, 309, 388, 417, 430, 511, 717, 779, 920, 932, 947, 948, 954]
TUNED = [11, 130, 301, 340, 555, 963, 980, 985]
SEED_PHOTO = "grace_hopper_00"  # the accentuation recipe's start (a photo of no class above)


def setting_value(text: str):
    """A ``--set`` value: numbers, lists, objects and true/false parsed as JSON, anything else kept as text."""
    return json.loads(text) if text[:1] in "0123456789-[{tf" else text


def fresh_classes(seed: int, n: int = 20) -> list[int]:
    """``n`` ImageNet classes drawn with ``seed``, none of :data:`CLASSES` or :data:`TUNED` (sorted)."""
    pool = [c for c in range(1000) if c not in CLASSES and c not in TUNED]
    return sorted(random.Random(seed).sample(pool, n))


def reference_folder(folder: Path) -> Path:
    """Natural reference images (crops and mirror images of the offline photos) as PNG files,
    named ``<class>_<name>`` where Lite0 reads the photo as an ImageNet class."""
    for stem, crop in photo_crops().items():
        name = stem.rsplit("_", 1)[0]
        save_image(crop, folder / (f"{LABELS[name]}_{stem}.png" if name in LABELS else f"{stem}.png"))
    return folder


def blind_folder(protos, recipe: str, out: Path, keys: Path, seed: int, candidates: int = 30) -> None:
    """``out/<recipe>/NN.png`` in a seeded shuffled order with ``candidates.txt`` (the true name
    among ``candidates - 1`` random ImageNet names, sorted); the key goes to ``keys/<recipe>.json``."""
    rng = random.Random(f"{seed}-{recipe}")
    order = list(range(len(protos)))
    rng.shuffle(order)
    folder = out / recipe
    lines, key = [], {}
    for n, i in enumerate(order, 1):
        p = protos[i]
        save_image(p.image, folder / f"{n:02d}.png")
        names = rng.sample([c for j, c in enumerate(imagenet_classes()) if j != p.cls], candidates - 1) + [p.name]
        lines.append(f"{n:02d}.png: " + "; ".join(sorted(names)))
        key[f"{n:02d}.png"] = p.name
    (folder / "candidates.txt").write_text("\n".join(lines) + "\n")
    write_json(key, keys / f"{recipe}.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=len(CLASSES), help="how many of the 20 classes")
    ap.add_argument("--fresh", type=int, default=None, metavar="SEED",
                    help="instead: 20 classes drawn with this seed from those never used for tuning or testing")
    ap.add_argument("--seconds", type=float, default=30.0, help="wall-time budget per prototype (default 30)")
    ap.add_argument("--recipes", default="lucent,bn-item,deepinversion,vital,accentuate")
    ap.add_argument("--steps", type=int, default=None,
                    help="the same fixed step count for every recipe instead of --seconds (no timed probes): "
                         "equal steps rather than equal time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evaluators", default="efficientnet-lite1,efficientnet-lite2")
    ap.add_argument("--set", action="append", default=[], metavar="RECIPE:key=value",
                    help="override one recipe setting, e.g. vital:flip=0 (numbers parsed)")
    ap.add_argument("--fold", action="store_true",
                    help="every recipe runs on the checked folded copy of the model (fvis --fold; faster steps)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "prototype")
    args = ap.parse_args(argv)
    classes = fresh_classes(args.fresh, args.classes) if args.fresh is not None else CLASSES[:args.classes]
    model = fvis.load("efficientnet-lite0", device=args.device)
    evaluators = [fvis.load(name, device=args.device) for name in args.evaluators.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fvis-bench-"))
    reference = reference_folder(tmp / "reference")
    save_image(photo_crops()[SEED_PHOTO], tmp / "seed.png")
    overrides: dict[str, dict] = {}
    for item in args.set:
        name, kv = item.split(":", 1)
        key, value = kv.split("=", 1)
        overrides.setdefault(name, {})[key] = setting_value(value)
    rows, sheets = [], {}
    for name in args.recipes.split(","):
        opts = {"init": f"image:{tmp / 'seed.png'}"} if RECIPES[name].init.startswith("image:") else {}
        if name == "vital":  # VITAL matches real images' activations: the offline photos' crops
            opts["match"] = f"images:{reference}"
        opts.update(overrides.get(name, {}))
        if args.steps is not None:
            steps = args.steps
        else:
            # timed probes of the same batch at 8 and 16 steps (after an untimed one that pays one-off costs):
            # their difference is the per-step cost, the rest the recipe's fixed set-up (statistics, balancing)
            common = dict(recipe=name, seed=args.seed, cache=tmp / "cache", heldout=0, progress=False, fold=args.fold,
                          **opts)
            make_prototypes(model, classes[:1], steps=2, **common)
            probes = {}
            for n in (8, 16):
                t = time.perf_counter()
                make_prototypes(model, classes, steps=n, **common)
                probes[n] = time.perf_counter() - t
            per_step = max(probes[16] - probes[8], 1e-3) / 8
            fixed = max(probes[8] - 8 * per_step, 0.0)
            steps = max(8, int((args.seconds * len(classes) - fixed) / per_step))
        t = time.perf_counter()
        protos = make_prototypes(model, classes, steps=steps, recipe=name, seed=args.seed, cache=tmp / "cache",
                                 evaluators=evaluators, progress=not args.quiet, fold=args.fold, **opts)
        wall = time.perf_counter() - t
        mean = lambda k: sum(p.metrics[k] for p in protos) / len(protos)  # noqa: E731
        natural = {k: sum(lo <= p.metrics["naturalness"][k] <= hi for p in protos) / len(protos)
                   for k, (lo, hi) in photo_ranges().items()}
        rows.append({"recipe": name, "steps": steps, "clean_p": mean("clean_p"), "robustness": mean("robustness"),
                     "transfer": mean("transfer"), "transfer_heldout": mean("transfer_heldout"),
                     "transfer_unseen": mean("transfer_unseen"), "hfer": mean("hfer"),
                     "natural": natural, "s_per_prototype": protos[0].seconds, "wall_s": wall,
                     "settings": protos[0].settings, "per_class": {p.cls: p.metrics for p in protos}})
        sheets[name] = protos
        r = rows[-1]
        print(f"{name:14s} steps {steps:4d} clean_p {r['clean_p']:.3f} robust {r['robustness']:.3f} "
              f"transfer {r['transfer']:.3f} held-out {r['transfer_heldout']:.3f} unseen {r['transfer_unseen']:.3f} hfer {r['hfer']:.3f} "
              f"{r['s_per_prototype']:.1f} s/prototype", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        contact_sheet([p.image for p in protos], [f"{p.name} p={p.metrics['clean_p']:.2f}" for p in protos],
                      args.out / f"{name}.png", columns=10, tile=128)
        blind_folder(protos, name, args.out / "blind", tmp / "keys", args.seed)
    stats = list(photo_ranges())
    lines = [f"EfficientNet-Lite0, {len(classes)} classes {classes} (none used for tuning), seed {args.seed}, "
             f"{f'{args.steps} steps' if args.steps else f'{args.seconds:g} s'} per prototype on {args.device} ({torch.get_num_threads()} threads); evaluators "
             f"{args.evaluators}; 32 held-out transforms. Naturalness columns: share of images inside the "
             f"offline photos' range.", "",
             "| recipe | steps | clean_p | robustness | transfer | transfer held-out | transfer unseen | HFER | "
             + " | ".join(stats) + " | s / prototype |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(stats) + "---:|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['steps']} | {r['clean_p']:.3f} | {r['robustness']:.3f} | "
                     f"{r['transfer']:.3f} | {r['transfer_heldout']:.3f} | {r['transfer_unseen']:.3f} | {r['hfer']:.3f} | "
                     + " | ".join(f"{r['natural'][k]:.2f}" for k in stats) + f" | {r['s_per_prototype']:.1f} |")
    cmd = "python scripts/bench_prototype.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = "\n".join(lines) + f"\n\nCommand: `{cmd.strip()}`\n"
    print(table)
    (args.out / "bench_prototype.md").write_text(table)
    write_json({"classes": classes, "seconds": args.seconds, "seed": args.seed, "device": args.device,
                "rows": rows, "answer_keys": str(tmp / "keys")}, args.out / "bench_prototype.json")
    print(f"blind-test folders in {args.out / 'blind'}; answer keys in {tmp / 'keys'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
