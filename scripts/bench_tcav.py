"""fvis.concepts.tcav vs captum.concept.TCAV: wall time and scores on EfficientNet-Lite0.

Same images (offline: skimage photos cropped for the class and the random pool, procedural stripes
and dots as concepts), same layer, same number of random runs. captum is a benchmark-only
dependency: ``pip install --no-deps captum`` (it uses scikit-learn's SGD classifier for its CAVs).

    python scripts/bench_tcav.py --runs 20 --concept-images 50 --class-images 20 --out results/tcav
    python scripts/bench_tcav.py --runs 3 --concept-images 6 --class-images 4   # smoke size

Both start cold (fvis without its cache, captum with a fresh CAV folder). Reports seconds and the
mean TCAV score per concept for both; captum's scores come from its own SGD CAVs, so they agree only
within sampling noise where the CAVs agree.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def photos():
    from skimage import data

    out = []
    for name in ("coffee", "astronaut", "chelsea", "rocket", "immunohistochemistry"):
        a = torch.from_numpy(getattr(data, name)()).float() / 255
        out.append(a.permute(2, 0, 1)[:3])
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--concept-images", type=int, default=50)
    p.add_argument("--class-images", type=int, default=20)
    p.add_argument("--layer", default="_blocks.8")
    p.add_argument("--target", default="espresso")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())

    import fvis
    from fvis import concepts as C
    from fvis.classes import resolve_class

    model = fvis.load("efficientnet-lite0")
    imgs = photos()
    size = 224
    cls = C.random_crops(imgs[0][None], args.class_images, size, seed=1, area=(0.4, 1.0))
    pool_imgs = torch.cat([C.random_crops(im[None], args.runs * args.concept_images // 4 + 1, size, seed=10 + i)
                           for i, im in enumerate(imgs[1:])])[:args.runs * args.concept_images]
    concepts = {"stripes": C.texture("stripes", args.concept_images, size, 1),
                "dots": C.texture("dots", args.concept_images, size, 2)}
    target = resolve_class(args.target)

    t = time.perf_counter()
    r = C.tcav(model, [args.layer], target, cls, concepts, pool_imgs, runs=args.runs, cache=False,
               min_images=min(10, args.concept_images))
    fvis_s = time.perf_counter() - t
    rows = {x.concept: {"fvis_score": x.score_mean, "fvis_std": x.score_std, "fvis_p": x.p_value} for x in r.results}

    captum_s = None
    try:
        from captum.concept import TCAV, Concept
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError:
        print("captum not installed (pip install --no-deps captum): fvis only")
    else:
        def concept(i, name, x):
            return Concept(i, name, DataLoader(TensorDataset(x), batch_size=32,
                                               collate_fn=lambda b: torch.stack([t[0] for t in b])))

        m = args.concept_images
        randoms = [concept(100 + i, f"random_{i}", pool_imgs[i * m:(i + 1) * m]) for i in range(args.runs)]
        cons = [concept(i, n, x) for i, (n, x) in enumerate(concepts.items())]
        sets = [[c, rnd] for c in cons for rnd in randoms]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            tc = TCAV(model, layers=[f"net.{args.layer}"], save_path=tmp)
            out = tc.interpret(cls, experimental_sets=sets, target=target)
            captum_s = time.perf_counter() - t
        for c in cons:
            vals = [out[f"{c.id}-{rnd.id}"][f"net.{args.layer}"]["sign_count"][0].item() for rnd in randoms]
            rows[c.name]["captum_score"] = sum(vals) / len(vals)
    report = {"runs": args.runs, "concept_images": args.concept_images, "class_images": args.class_images,
              "layer": args.layer, "target": args.target, "fvis_seconds": fvis_s, "captum_seconds": captum_s,
              "speedup": captum_s / fvis_s if captum_s else None, "concepts": rows}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"bench_tcav_runs{args.runs}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
