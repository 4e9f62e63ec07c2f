"""Run every image capability of fvis once on a device (e.g. CUDA) and report what broke.

    python scripts/check_device.py --device cuda

Renders, prototypes (the default recipe; MACO with photo statistics), an attack, every attribution method, feature isolation,
evaluation and entanglement on EfficientNet-Lite0, each on the device, each on a tiny problem.
Prints one line per capability (ok / FAILED with the error) and exits non-zero if any failed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import fvis
import objectives as obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    dev = args.device
    model = fvis.load("efficientnet-lite0", device=dev)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tmp = Path(tempfile.mkdtemp(prefix="fvis-check-"))

    def render():
        from fvis.render import render
        r = render(model, [obj.channel("_blocks.8", 33), obj.class_logit(1)], steps=8, size=96, progress=False)
        return f"values {[round(v, 2) for v in r.values.tolist()]}"

    def prototype():
        from fvis.prototype import make_prototypes, save_prototypes
        ps = make_prototypes(model, [94, 980], per_class=2, steps=16, size=96, diversity=50, heldout=4,
                             progress=False, evaluators=[fvis.load("efficientnet-lite1", device=dev)])
        save_prototypes(ps, tmp / "protos")
        return f"clean_p {[round(p.metrics['clean_p'], 2) for p in ps]}"

    def prototype_maco_images():
        from fvis.files import save_image
        from fvis.prototype import make_prototypes
        for i in range(3):
            save_image(x[i % 2], tmp / "ref" / f"967_{i}.png")
        ps = make_prototypes(model, [967], recipe="robust-blur", steps=8, size=96, param="maco", match=f"images:{tmp / 'ref'}",
                             reference=tmp / "ref", cache=tmp / "cache", heldout=4, progress=False)
        return f"clean_p {ps[0].metrics['clean_p']:.2f}"

    def attack():
        from fvis.attack import attack
        for norm in ("linf", "l2"):
            a = attack(model, x.to(dev), target=11, eps=8 / 255 if norm == "linf" else 1.0, norm=norm, steps=5, eot=2)
        return f"success {a.success.tolist()}"

    def explain():
        from fvis.explain import explain
        out = {}
        for m in ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "guided-gradcam", "occlusion"):
            opts = {"samples": 4} if m == "smoothgrad" else {"steps": 8} if m == "ig" else {"stride": 32} if m == "occlusion" else {}
            a = explain(model, x[:1].to(dev), m, **opts)
            out[m] = tuple(a.heatmap.shape)
        return f"{len(out)} methods"

    def isolate():
        from fvis.isolate import isolate
        isolate(model, x[:1].to(dev), steps=8, progress=False)
        return "mask ok"

    def evaluate_entangle():
        from fvis.entangle import entangle_folder
        from fvis.evaluate import evaluate_folder
        rep = evaluate_folder(tmp / "protos", model, [], transforms=4)
        entangle_folder(tmp / "protos", model)
        return f"evaluated {len(rep['rows'])}"

    failed = 0
    for name, check in [("render", render), ("prototype", prototype), ("prototype maco+images", prototype_maco_images),
                        ("attack", attack), ("explain", explain), ("isolate", isolate),
                        ("evaluate+entangle", evaluate_entangle)]:
        t = time.perf_counter()
        try:
            info = check()
            print(f"{name:24s} ok      {time.perf_counter() - t:6.1f} s  {info}", flush=True)
        except Exception as e:  # report every capability, then fail
            failed += 1
            print(f"{name:24s} FAILED  {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=-3)
    print(f"{dev}: {7 - failed}/7 capabilities ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
