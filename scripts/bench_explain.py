"""Benchmark and side-by-side check of fvis.explain on EfficientNet-Lite0 (224x224, CPU).

    python scripts/bench_explain.py                  # timings, IG gap table, captum / grad-cam check, gallery
    python scripts/bench_explain.py --quick          # timings only

Speed targets (issue 6): batched IG with 64 steps and occlusion with stride 8 at 224x224 each
under 10 s on 2 CPU cores. Timings are medians of ``--repeats`` runs after one warm-up run.
The reference implementations are only imported here (not fvis dependencies):
``pip install captum grad-cam``. Writes results/explain/bench.md and bench.json, and with the
gallery, example outputs under results/explain/.
"""
from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as Fn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fvis  # noqa: E402
from fvis import explain as E  # noqa: E402  (the old path: methods and display helpers in one name)
from fvis.attribution import scorer as S  # noqa: E402
from fvis.files import contact_sheet, save_image, versions, write_json  # noqa: E402

OUT = ROOT / "results" / "explain"


def photos() -> dict[str, torch.Tensor]:
    """Offline photos, 224x224 centre crops in [0, 1]."""
    from skimage import data
    from torchvision.transforms.v2 import functional as F

    def crop(a):
        img = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255
        return F.center_crop(F.resize(img, [224], antialias=True), [224, 224])

    out = {n: crop(getattr(data, n)()) for n in ("coffee", "chelsea", "rocket", "astronaut")}
    try:
        from sklearn.datasets import load_sample_image

        out["china"] = crop(load_sample_image("china.jpg"))
        out["flower"] = crop(load_sample_image("flower.jpg"))
    except ImportError:
        pass
    return out


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def corr(a, b) -> float:
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def minmax(t: torch.Tensor) -> torch.Tensor:
    t = t.double()
    return (t - t.min()) / (t.max() - t.min()).clamp_min(1e-30)


def bench_speed(model, x, repeats, batch_size) -> list[dict]:
    rows = []
    cases = [
        ("ig", "integrated gradients, 64 steps (Gauss-Legendre), black baseline",
         lambda: E.integrated_gradients(model, x, steps=64, batch_size=batch_size, progress=False), 10.0),
        ("occlusion", "occlusion, patch 16, stride 8 (729 windows), baseline 0",
         lambda: E.occlusion(model, x, patch=16, stride=8, batch_size=batch_size, progress=False), 10.0),
        ("saliency", "saliency", lambda: E.saliency(model, x, progress=False), None),
        ("smoothgrad", "SmoothGrad, 25 samples", lambda: E.smoothgrad(model, x, batch_size=batch_size, progress=False), None),
        ("gradcam", "Grad-CAM (_conv_head)", lambda: E.gradcam(model, x, progress=False), None),
        ("guided-gradcam", "Guided Grad-CAM", lambda: E.guided_gradcam(model, x, progress=False), None),
        ("mask", "feature isolation mask, 100 steps", lambda: E.explain(model, x, "mask", progress=False), None),
    ]
    for key, label, fn, target in cases:
        med, times, _ = timed(fn, repeats if key in ("ig", "occlusion") else 1)
        rows.append({"method": key, "case": label, "seconds": round(med, 2), "runs": [round(t, 2) for t in times],
                     "target_s": target, "met": (med < target) if target else None})
        print(f"{label:<66} {med:6.2f} s  runs {', '.join(f'{t:.2f}' for t in times)}", flush=True)
    # what the channels-last layout buys (the same computation in NCHW)
    capture = S.Capture  # the attribution Scorer's Capture
    try:
        S.Capture = functools.partial(capture, channels_last=False)
        med, times, _ = timed(lambda: E.occlusion(model, x, patch=16, stride=8, batch_size=batch_size, progress=False), 1)
    finally:
        S.Capture = capture
    rows.append({"method": "occlusion-nchw", "case": "occlusion as above, NCHW layout (for comparison)",
                 "seconds": round(med, 2), "runs": [round(t, 2) for t in times], "target_s": None, "met": None})
    print(f"{'occlusion, NCHW layout (comparison)':<66} {med:6.2f} s", flush=True)
    return rows


def ig_gap_table(model, images: dict, steps=(16, 32, 64, 128, 256, 512)) -> list[dict]:
    rows = []
    for name, img in images.items():
        row = {"image": name}
        for s in steps:
            a = E.integrated_gradients(model, img, steps=s, progress=False)
            row[s] = float(a.info["relative_gap"][0])
        row["class"] = model.class_names[int(a.target[0])]
        rows.append(row)
        print(f"IG gap {name:<10} " + "  ".join(f"{s}: {row[s]:.2%}" for s in steps), flush=True)
    return rows


def compare_references(model, x, batch_size) -> list[dict]:
    """fvis vs captum / pytorch-grad-cam on the same inputs and settings, where importable."""
    rows = []
    c = int(E.saliency(model, x, progress=False).target[0])
    xb = x[None]
    try:
        import captum.attr as ca
    except ImportError:
        ca = None
        print("captum not importable: skipping its side-by-side (pip install captum)")
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        pgc = None
        print("pytorch-grad-cam not importable: skipping its side-by-side (pip install grad-cam)")

    def add(method, ref, mine, theirs, note, seconds=None):
        row = {"method": method, "reference": ref, "rel_l2_error": rel_err(mine, theirs), "pearson": corr(mine, theirs),
               "note": note, "reference_seconds": seconds}
        rows.append(row)
        print(f"{method:<16} vs {ref:<18} rel. L2 error {row['rel_l2_error']:.2e}  r = {row['pearson']:.6f}  {note}", flush=True)

    if ca is not None:
        with torch.no_grad():
            model.eval()
        mine = E.saliency(model, x, c, progress=False).raw
        add("saliency", "captum Saliency", mine, ca.Saliency(model).attribute(xb.clone().requires_grad_(), target=c, abs=False).detach(),
            "raw gradient")
        mine = E.integrated_gradients(model, x, c, steps=64, batch_size=batch_size, progress=False).raw
        t = time.perf_counter()
        theirs = ca.IntegratedGradients(model).attribute(xb, baselines=torch.zeros_like(xb), target=c, n_steps=64,
                                                         method="gausslegendre", internal_batch_size=batch_size)
        add("ig", "captum IG", mine, theirs.detach(), "64 steps, Gauss-Legendre, black baseline",
            round(time.perf_counter() - t, 2))
        mine = E.occlusion(model, x, c, patch=16, stride=8, baseline=0.0, batch_size=batch_size, progress=False).raw
        t = time.perf_counter()
        theirs = ca.Occlusion(model).attribute(xb, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0,
                                               target=c, perturbations_per_eval=batch_size)
        add("occlusion", "captum Occlusion", mine[0, 0], theirs[0, 0].detach(),
            "patch 16, stride 8, baseline 0 (captum: same map on each channel)", round(time.perf_counter() - t, 2))
        cam = E.gradcam(model, x, c, progress=False).info["cam"]
        theirs = ca.LayerGradCam(model, model.net._conv_head).attribute(xb, target=c, relu_attributions=True)
        add("gradcam", "captum LayerGradCam", cam, theirs.detach(), "_conv_head, 7x7 maps")
        sd = 0.15 * float(x.max() - x.min())
        mine = E.smoothgrad(model, x, c, samples=25, noise=0.15, batch_size=batch_size, progress=False).heatmap[0]
        theirs = ca.NoiseTunnel(ca.Saliency(model)).attribute(xb, nt_type="smoothgrad", nt_samples=25, stdevs=sd,
                                                                target=c, abs=False, nt_samples_batch_size=batch_size)
        theirs = E.normalize(E.reduce_channels(theirs.detach(), "absmax"))[0]
        add("smoothgrad", "captum NoiseTunnel", Fn.avg_pool2d(mine[None, None], 8), Fn.avg_pool2d(theirs[None, None], 8),
            "25 samples, different noise draws: heatmaps average-pooled 8x8")
    if pgc is not None:
        layer = model.net._conv_head
        with pgc.GradCAM(model=model, target_layers=[layer]) as cam_ref:
            theirs = torch.from_numpy(cam_ref(input_tensor=xb, targets=[ClassifierOutputTarget(c)]))[0]
        mine = E.gradcam(model, x, c, progress=False).raw[0, 0]
        add("gradcam", "pytorch-grad-cam", minmax(mine), theirs, "224x224 after min-max scaling (theirs: OpenCV resize)")
    # guided backprop: both references only handle nn.ReLU (Lite0 uses ReLU6) -> a ReLU network
    import torchvision

    torch.manual_seed(0)
    net = fvis.wrap(torchvision.models.resnet18(weights=None).eval(), name="resnet18-random")
    mine = E.guided_backprop(net, x, 1, progress=False).raw
    if ca is not None:
        add("guided-backprop", "captum GuidedBackprop", mine,
            ca.GuidedBackprop(net).attribute(xb.clone(), target=1).detach(), "random-weight ResNet-18 (nn.ReLU)")
    if pgc is not None:
        ref = copy.deepcopy(net)  # pytorch-grad-cam swaps the ReLU modules of the model it is given
        theirs = torch.from_numpy(pgc.GuidedBackpropReLUModel(ref, device="cpu")(xb.clone(), target_category=1))
        add("guided-backprop", "pytorch-grad-cam", mine[0].permute(1, 2, 0), theirs,
            "random-weight ResNet-18 (theirs mutates the model; ours uses hooks)")
    return rows


def gallery(model, images: dict) -> None:
    """Example outputs: every method on coffee, a mask of a rendered prototype for two classes,
    top-k examples from the photos, first-layer filters."""
    from fvis.inspection import activation_maps, activation_sheet, filter_view, save_top_k, top_k
    from fvis.isolate import shared_features
    from fvis.render import render

    import objectives as obj

    import shutil
    import tempfile

    x = images["coffee"]
    results = [E.explain(model, x, m, progress=False) for m in
               ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "guided-gradcam", "occlusion", "mask")]
    with tempfile.TemporaryDirectory() as tmp:  # keep the sheet and the JSONs, not 600 kB raw arrays
        E.save_attributions(results, x, tmp, meta={"model": model.name, "image": "skimage coffee, 224 centre crop"},
                            class_names=model.class_names)
        (OUT / "coffee").mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.suffix == ".json" or f.name in ("comparison.png", "mask_kept.png"):
                shutil.copy(f, OUT / "coffee" / f.name)

    def isolation_sheet(image, iso, shared, title, path):
        tiles, labels = [image], [title]
        for i, name in enumerate(["espresso", "cup"]):
            tiles.append(E.spotlight(image, iso.mask[i, 0] / iso.mask[i].max()))
            labels.append(f"{name}: keeps {float(iso.kept[i]):.2f} of the logit with {float(iso.area[i]):.0%} of the image")
        tiles.append(E.spotlight(image, shared[0] / shared.max()))
        labels.append("shared by both (min of the masks)")
        contact_sheet(tiles, labels, path, columns=4)

    # feature isolation on a prototype: render "espresso", then isolate espresso and cup on it
    proto = render(model, [obj.class_logit("espresso")], steps=256, seed=0, progress=False).input[0]
    iso, shared = shared_features(model, proto, ["espresso", "cup"], progress=False)
    isolation_sheet(proto, iso, shared, "prototype: espresso logit, 256 steps", OUT / "prototype_isolation.png")
    iso, shared = shared_features(model, x, ["espresso", "cup"], progress=False)
    isolation_sheet(x, iso, shared, "photo (skimage coffee)", OUT / "photo_isolation.png")
    # inspection
    folder = OUT / "_photos"
    for name, img in images.items():
        save_image(img, folder / f"{name}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_top_k(top_k(model, folder, "_blocks.8", 33, k=4, progress=False), OUT / "topk_blocks.8_33")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    save_image(filter_view(model).image, OUT / "filters_conv_stem.png")
    activation_sheet(activation_maps(model, x, "_blocks.2", 11), x, OUT / "activations_blocks.2_coffee.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="timings only")
    ap.add_argument("--no-gallery", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = fvis.load("efficientnet-lite0")
    images = photos()
    x = images["coffee"]
    report = {"versions": versions(), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
              "command": "python scripts/bench_explain.py " + " ".join(sys.argv[1:])}
    report["speed"] = bench_speed(model, x, args.repeats, args.batch_size)
    if not args.quick:
        report["ig_gap"] = ig_gap_table(model, images)
        report["references"] = compare_references(model, x, args.batch_size)
        if not args.no_gallery:
            gallery(model, images)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(report, OUT / "bench.json")
    (OUT / "bench.md").write_text(markdown(report))
    print(f"wrote {OUT / 'bench.md'}")


def markdown(r: dict) -> str:
    lines = ["# fvis explain: benchmark (EfficientNet-Lite0, 224x224, CPU)", "",
             f"`{r['command']}` — {r['threads']} threads, batch size {r['batch_size']}, torch {r['versions']['torch']}; "
             "medians of the listed runs after one warm-up run (shared, noisy machine).", "",
             "| method | seconds | runs | target |", "|---|---:|---|---|"]
    for s in r["speed"]:
        target = "" if s["target_s"] is None else f"< {s['target_s']:g} s: {'met' if s['met'] else '**not met**'}"
        lines.append(f"| {s['case']} | {s['seconds']:.2f} | {', '.join(f'{t:.2f}' for t in s['runs'])} | {target} |")
    if "ig_gap" in r:
        steps = [k for k in r["ig_gap"][0] if isinstance(k, int)]
        lines += ["", "## Integrated gradients: completeness gap |sum(attr) - (f(x) - f(black))| / |f(x) - f(black)|", "",
                  "| image (Lite0 top-1) | " + " | ".join(f"{s} steps" for s in steps) + " |",
                  "|---|" + "---:|" * len(steps)]
        for row in r["ig_gap"]:
            lines.append(f"| {row['image']} ({row['class']}) | " + " | ".join(f"{row[s]:.2%}" for s in steps) + " |")
    if r.get("references"):
        lines += ["", "## Side by side with captum / pytorch-grad-cam (same input, class and settings)", "",
                  "| method | reference | rel. L2 error | Pearson r | reference s (1 run) | note |",
                  "|---|---|---:|---:|---:|---|"]
        for row in r["references"]:
            sec = "" if row["reference_seconds"] is None else f"{row['reference_seconds']:.2f}"
            lines.append(f"| {row['method']} | {row['reference']} | {row['rel_l2_error']:.1e} | {row['pearson']:.6f} "
                         f"| {sec} | {row['note']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
