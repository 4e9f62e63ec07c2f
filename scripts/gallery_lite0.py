"""Render a gallery of EfficientNet-Lite0: channels from early, middle and late blocks, and class logits.

    python scripts/gallery_lite0.py [--steps 512] [--out results/gallery_lite0]

Writes one labelled contact sheet per group plus ``summary.json`` (objective values, top-1 class of
each image, seconds). Each group is one batched `fvis render` run with the default recipe
(Fourier parameterization, decay power 1, colour decorrelation, transformation robustness, Adam 0.05).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import objectives
import fvis
from fvis.files import contact_sheet, write_json
from fvis.models import top_classes
from fvis.render import render

GROUPS = {
    "early_blocks.2": [f"channel:_blocks.2:{c}" for c in (0, 3, 7, 11, 16, 21)],
    "middle_blocks.8": [f"channel:_blocks.8:{c}" for c in (2, 17, 33, 48, 70, 101)],
    "late_blocks.14": [f"channel:_blocks.14:{c}" for c in (5, 40, 77, 120, 150, 181)],
    "class_logits": ["logit:goldfinch", "logit:hummingbird", "logit:strawberry", "logit:volcano",
                     "logit:daisy", "logit:espresso"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/gallery_lite0"))
    args = ap.parse_args()
    model = fvis.load("efficientnet-lite0")
    summary = {"command": f"python scripts/gallery_lite0.py --steps {args.steps} --seed {args.seed}",
               "model": model.name, "steps": args.steps, "seed": args.seed, "groups": {}}
    for group, specs in GROUPS.items():
        result = render(model, [objectives.parse(s, model.class_names) for s in specs],
                        steps=args.steps, seed=args.seed)
        tops = top_classes(model, result.input, k=1)
        labels = [f"{s}  top-1: {t[0]['name']} {t[0]['p']:.2f}" for s, t in zip(specs, tops)]
        contact_sheet(list(result.input), labels, args.out / f"{group}.png", columns=6, tile=192)
        summary["groups"][group] = {
            "seconds": round(result.seconds, 1), "seconds_per_step": round(result.seconds_per_step, 4),
            "items": [{"spec": s, "objective": round(float(v), 4), "top1": t[0]}
                      for s, v, t in zip(specs, result.values, tops)]}
        print(f"{group}: {result.seconds:.0f} s -> {args.out / (group + '.png')}", flush=True)
    write_json(summary, args.out / "summary.json")


if __name__ == "__main__":
    main()
