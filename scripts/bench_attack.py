"""Benchmark fvis attacks on EfficientNet-Lite0 against torchattacks, side by side in one run.

    pip install --no-deps torchattacks      # optional: without it, the side-by-side rows are skipped
    python scripts/bench_attack.py [--images 64] [--steps 10] [--out results/bench_attack.md]

Inputs: crops and flips of the offline sample photos (scikit-image, scikit-learn, matplotlib),
resized to 224 and quantized to 8 bits. Labels for untargeted attacks are Lite0's clean
predictions; targets are seeded random classes. Every success rate, fvis's and torchattacks',
is judged the same way: on the quantized 8-bit image, re-classified.

1. PGD parity (L-inf, identical eps, steps, step size eps/4, random start): success rates and wall
   time of ``fvis.attack.attack`` vs ``torchattacks.PGD`` (each timed with the same judging pass).
   fvis runs twice: with its defaults (per-item early stop, best iterate), and as exactly
   torchattacks' algorithm (every item takes every step, last iterate returned). Both tools draw
   the random start from the same seed with ``uniform_(-eps, eps)``, so the starts are identical.
   Timings are medians over ``--rounds`` interleaved rounds (the machine is shared and noisy).
2. Targeted success at eps 1/255, 2/255, 4/255, 8/255 (fvis PGD).
3. One expectation-over-transformations example: success under 32 held-out random transforms
   (fvis.metrics) of plain PGD vs PGD with EOT.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

import fvis
from fvis.attack import attack, heldout_success, quantize

PHOTOS = ["skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:immunohistochemistry",
          "sklearn:china.jpg", "sklearn:flower.jpg", "mpl:grace_hopper.jpg"]


def load_photo(spec: str) -> torch.Tensor:
    kind, name = spec.split(":")
    if kind == "skimage":
        from skimage import data
        array = getattr(data, name)()
    elif kind == "sklearn":
        from sklearn.datasets import load_sample_image
        array = load_sample_image(name)
    else:
        import matplotlib.cbook
        from PIL import Image
        import numpy as np
        with matplotlib.cbook.get_sample_data(name) as f:
            array = np.asarray(Image.open(f).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def make_inputs(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` 224x224 8-bit images: random crops (60-100% of the short side) of the photos, half flipped."""
    g = torch.Generator().manual_seed(seed)
    photos = [load_photo(p) for p in PHOTOS]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.6 + 0.4 * torch.rand(1, generator=g).item()))
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = F.resize(img[:, top:top + side, left:left + side], [224, 224], antialias=True)
        out.append(crop.flip(-1) if (i // len(photos)) % 2 else crop)
    return (torch.stack(out).clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def judge(model, clean, adv, eps, classes, targeted):
    pred = model(quantize(clean, adv, eps, "linf")).argmax(1)
    return (pred == classes) if targeted else (pred != classes)


def run_torchattacks(model, images, classes, targeted, eps, steps, alpha, seed):
    import torchattacks

    torch.manual_seed(seed)  # torchattacks draws its random start from the global RNG
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
    start = time.perf_counter()
    adv = atk(images, classes)
    ok = judge(model, images, adv, eps, classes, targeted)
    return ok, time.perf_counter() - start, quantize(images, adv, eps, "linf")


def run_fvis(model, images, classes, targeted, eps, steps, alpha, seed, early_stop=True, best_iterate=True):
    start = time.perf_counter()
    kwargs = {"target": classes} if targeted else {"labels": classes}
    r = attack(model, images, eps=eps, steps=steps, step_size=alpha, method="pgd", random_start=True,
               early_stop=early_stop, best_iterate=best_iterate, seed=seed, progress=False, **kwargs)
    return r.success, time.perf_counter() - start, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eot-images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds for section 1")
    ap.add_argument("--out", type=Path, default=Path("results/bench_attack.md"))
    args = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    model = fvis.load("efficientnet-lite0")
    images = make_inputs(args.images, args.seed)
    with torch.no_grad():
        labels = model(images).argmax(1)
    targets = torch.randint(0, 1000, (args.images,), generator=torch.Generator().manual_seed(args.seed + 1))
    try:
        import torchattacks  # noqa: F401
        have_ta = True
    except ImportError:
        have_ta = False
        print("torchattacks not importable: side-by-side rows skipped (pip install --no-deps torchattacks)")

    cmd = (f"python scripts/bench_attack.py --images {args.images} --steps {args.steps} --seed {args.seed} "
           f"--eot-images {args.eot_images} --rounds {args.rounds}")
    lines = ["# Adversarial attack benchmark (EfficientNet-Lite0)", "",
             f"Command: `{cmd}`  ", f"Machine: {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU.  ",
             f"Inputs: {args.images} crops/flips of {len(PHOTOS)} offline photos, 224x224, 8-bit. "
             "Success is judged on the quantized 8-bit image for every row.", ""]

    lines += ["## 1. PGD side by side (L-inf, step size eps/4, random start, same inputs and labels)", "",
              "| setting | tool | success | seconds | time ratio vs torchattacks |", "|---|---|---|---|---|"]
    if have_ta:  # warm-up (first-call allocations), untimed
        run_torchattacks(model, images[:2], labels[:2], False, 1 / 255, 1, 1 / 255, args.seed)
    run_fvis(model, images[:2], labels[:2], False, 1 / 255, 1, 1 / 255, args.seed)
    settings = [("untargeted", 1 / 255, labels, False), ("targeted", 4 / 255, targets, True)]
    for name, eps, classes, targeted in settings:
        alpha = eps / 4
        runs = []
        if have_ta:
            runs.append(("torchattacks.PGD",
                         lambda: run_torchattacks(model, images, classes, targeted, eps, args.steps, alpha, args.seed)))
        runs.append(("fvis pgd (defaults: early stop, best iterate)",
                     lambda: run_fvis(model, images, classes, targeted, eps, args.steps, alpha, args.seed)[:2]))
        runs.append(("fvis pgd (no early stop, last iterate: torchattacks' algorithm)",
                     lambda: run_fvis(model, images, classes, targeted, eps, args.steps, alpha, args.seed,
                                      early_stop=False, best_iterate=False)))
        times, oks, last = {n: [] for n, _ in runs}, {}, {}
        for _ in range(args.rounds):  # interleaved rounds, median time
            for tool, fn in runs:
                ok, t, *extra = fn()
                if extra:
                    last[tool] = extra[0] if isinstance(extra[0], torch.Tensor) else extra[0].adversarial
                oks.setdefault(tool, ok)
                assert torch.equal(oks[tool], ok), "success must not depend on the round"
                times[tool].append(t)
        rows = [(tool, oks[tool], statistics.median(times[tool])) for tool, _ in runs]
        t_ref = rows[0][2] if have_ta else None
        for tool, ok, t in rows:
            ratio = f"{t / t_ref:.3f}" if t_ref else "n/a"
            lines.append(f"| {name}, eps {eps * 255:g}/255, {args.steps} steps | {tool} | "
                         f"{ok.float().mean():.1%} ({int(ok.sum())}/{len(ok)}) | {t:.1f} | {ratio} |")
            print(lines[-1], flush=True)
        if have_ta:
            a, b = last["torchattacks.PGD"], last[runs[-1][0]]
            differ = ((a * 255).round() != (b * 255).round()).float().mean()
            lines.append(f"| ↳ same algorithm, same random start: 8-bit pixel values that differ between the two "
                         f"| {differ:.4%} | max {((a - b).abs().max() * 255):.0f}/255 | | |")
            print(lines[-1], flush=True)

    lines += ["", f"## 2. Targeted success vs eps (fvis PGD, {args.steps} steps, step size eps/4, random start)", "",
              "| eps | success | median L-inf (x255) | median L2 | median steps used | seconds |", "|---|---|---|---|---|---|"]
    for k in (1, 2, 4, 8):
        _, t, r = run_fvis(model, images, targets, True, k / 255, args.steps, k / 255 / 4, args.seed)
        lines.append(f"| {k}/255 | {r.success_rate:.1%} | {r.linf.median() * 255:.2f} | {r.l2.median():.3f} | "
                     f"{r.steps.float().median():.0f} | {t:.1f} |")
        print(lines[-1], flush=True)

    n = args.eot_images
    eps, steps = 8 / 255, 30
    lines += ["", f"## 3. Expectation over transformations ({n} images, targeted, eps 8/255, {steps} steps, "
              "success under 32 held-out transforms: shift ±16 px, scale 0.8-1.2, rotate ±15°, flip, blur)", "",
              "| attack | success (clean) | mean held-out success | seconds |", "|---|---|---|---|"]
    for eot in (0, 8):
        start = time.perf_counter()
        r = attack(model, images[:n], target=targets[:n], eps=eps, steps=steps, eot=eot, early_stop=eot == 0,
                   seed=args.seed, progress=False)
        held = heldout_success(model, r, n=32, seed=args.seed + 7)
        label = "PGD" if eot == 0 else f"PGD + EOT ({eot} transforms/step, no early stop)"
        lines.append(f"| {label} | {r.success_rate:.0%} | {held.mean():.2f} | {time.perf_counter() - start:.1f} |")
        print(lines[-1], flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
