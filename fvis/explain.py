"""Attribution methods: which pixels of an input drive a class logit (or any objective).

Every method takes images ``x`` ``(B, C, H, W)`` in [0, 1] (or one ``(C, H, W)`` image) and a
``target``: ``None`` (each item's top-1 class), a class index or name, one class per item, or an
:class:`objectives.Objective` (e.g. ``obj.channel("_blocks.8", 33)``: attribute a channel).
All run batched, in eval mode with frozen weights, and leave the model as they found it.
They return an :class:`Attribution`: ``raw`` (the method's own output, signed, ``(B, C, H, W)``
or ``(B, 1, H, W)``), ``heatmap`` ``(B, H, W)`` in [0, 1] for display, scores and per-method info.

Methods: :func:`saliency`, :func:`gradient_x_input`, :func:`smoothgrad`,
:func:`integrated_gradients`, :func:`occlusion`; Grad-CAM and guided backpropagation live in
:mod:`fvis.cam` (:func:`gradcam`, :func:`guided_gradcam`, also importable from here);
the optimization-based mask lives in :mod:`fvis.isolate`. :func:`explain` runs any by name.
"""
from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from .baselines import make_baseline
from .cam import check_cam_layer, default_cam_layer, gradcam, guided_backprop, guided_gradcam  # noqa: F401  (old path too)
from .display import colorize, normalize, overlay, reduce_channels, spotlight  # noqa: F401  (also an old import path)
from .errors import FvisError, suggest
from .files import atomic_write, contact_sheet, save_image, versions, write_json
from .isolate import isolate_attribution
from .naming import slug
from .progress import progress_bar
from .scorer import (Attribution, Scorer, as_batch, chunks, finish, gradients, plain_gradient,  # noqa: F401
                     plain_settings)

METHODS = ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "guided-gradcam", "occlusion", "mask")


# --------------------------------------------------------------------------- gradient methods
def saliency(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
             progress: bool = True) -> Attribution:
    """Vanilla gradient (Simonyan et al. 2013). ``raw``: d score / d x ``(B, C, H, W)``;
    heatmap: max over channels of |gradient|."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = plain_gradient(scorer, x, batch_size, progress, "saliency")
    return finish("saliency", grads, normalize(reduce_channels(grads, "absmax")), scorer, score, t0,
                   plain_settings(batch_size=batch_size))


def gradient_x_input(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
                     progress: bool = True) -> Attribution:
    """Gradient x input (Shrikumar et al. 2016), input in [0, 1] (black is the implicit reference).
    ``raw`` ``(B, C, H, W)``; heatmap: |sum over channels|."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = plain_gradient(scorer, x, batch_size, progress, "gradxinput")
    raw = grads * x
    return finish("gradxinput", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   plain_settings(batch_size=batch_size))


def smoothgrad(model: nn.Module, x: torch.Tensor, target=None, *, samples: int = 25, noise: float = 0.15,
               seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies,
    Gaussian noise of std ``noise * (max(x) - min(x))`` per item (seeded). ``raw``: mean gradient
    ``(B, C, H, W)``; heatmap: max over channels of |mean gradient|."""
    if samples < 1:
        raise FvisError(f"smoothgrad needs samples >= 1, got {samples}")
    t0 = time.perf_counter()
    x = as_batch(x, model)
    b, shape = x.shape[0], tuple(x.shape[1:])
    g = torch.Generator().manual_seed(seed)
    sd = (noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))).cpu()
    eps = torch.randn((b, samples) + shape, generator=g) * sd.view(b, 1, 1, 1, 1)  # drawn once: seeded, chunk-free
    items = torch.arange(b).repeat_interleave(samples)

    def rows(part):
        idx = torch.arange(part.start, part.stop)
        return x[idx // samples] + eps.view(-1, *shape)[idx].to(x.device)

    total = torch.zeros_like(x)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        for part, grad, _ in gradients(scorer, rows, b * samples, items, batch_size, progress, "smoothgrad"):
            total.index_add_(0, items[part].to(x.device), grad)
    raw = total / samples
    return finish("smoothgrad", raw, normalize(reduce_channels(raw, "absmax")), scorer, score, t0,
                   plain_settings(samples=samples, noise=noise, seed=seed, batch_size=batch_size))


def _path(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and quadrature weights (summing to 1) for the path integral."""
    if steps < 1:
        raise FvisError(f"integrated gradients needs steps >= 1, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((nodes + 1) / 2, dtype=torch.float32), torch.tensor(weights / 2, dtype=torch.float32)
    if method == "trapezoid":
        if steps < 2:
            raise FvisError("the trapezoid rule needs steps >= 2")
        w = torch.full((steps,), 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
        return torch.linspace(0, 1, steps), w
    if method == "midpoint":
        return (torch.arange(steps) + 0.5) / steps, torch.full((steps,), 1.0 / steps)
    raise FvisError(f"unknown integration method {method!r}: gausslegendre, trapezoid or midpoint")


def integrated_gradients(model: nn.Module, x: torch.Tensor, target=None, *, baseline="black", steps: int = 64,
                         method: str = "gausslegendre", baseline_images: str | Path | None = None,
                         seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` to ``x``.

    ``baseline``: ``"black"``, ``"blur"``, ``"noise"``, ``"mean"`` (mean image of
    ``baseline_images``), ``"gray"``, a number or a tensor. ``steps`` points on the straight
    path, all items' points batched together (``batch_size`` rows per forward/backward);
    ``method``: ``"gausslegendre"`` (default, as captum), ``"trapezoid"`` or ``"midpoint"``.
    ``raw`` ``(B, C, H, W)`` = (x - x0) * weighted mean gradient; heatmap: |sum over channels|.
    ``info``: ``baseline_score`` f(x0), ``attribution_sum``, ``completeness_gap``
    = sum(raw) - (f(x) - f(x0)) and ``relative_gap`` = |gap| / |f(x) - f(x0)|, per item.
    """
    t0 = time.perf_counter()
    x = as_batch(x, model)
    x0 = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    alphas, weights = _path(steps, method)
    alphas, weights = alphas.to(x.device), weights.to(x.device)
    b = x.shape[0]
    items = torch.arange(b).repeat_interleave(steps)  # item-major rows: item i, path points 0..steps-1

    def rows(part):
        idx = torch.arange(part.start, part.stop, device=x.device)
        i, k = idx // steps, idx % steps
        return x0[i] + alphas[k].view(-1, 1, 1, 1) * (x[i] - x0[i])

    mean_grad = torch.zeros_like(x)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        with torch.no_grad():
            base_score = scorer(x0, torch.arange(b))[0].float().cpu()
        for part, grad, _ in gradients(scorer, rows, b * steps, items, batch_size, progress, "integrated gradients"):
            k = torch.arange(part.start, part.stop, device=x.device) % steps
            mean_grad.index_add_(0, items[part].to(x.device), grad * weights[k].view(-1, 1, 1, 1))
    raw = (x - x0) * mean_grad
    total = raw.double().flatten(1).sum(1).float().cpu()
    delta = score - base_score
    gap = total - delta
    relative = gap.abs() / delta.abs().clamp_min(1e-12)
    if (relative > 0.05).any():
        worst = int(relative.argmax())
        warnings.warn(f"fvis: integrated gradients completeness gap is {float(relative[worst]):.1%} of "
                      f"f(x) - f(baseline) (item {worst}); use more steps (now {steps})")
    name = baseline if isinstance(baseline, str) else ("constant" if isinstance(baseline, (int, float)) else "tensor")
    return finish("ig", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   plain_settings(baseline=name if not isinstance(baseline, (int, float)) else float(baseline),
                             steps=steps, method=method, seed=seed, batch_size=batch_size,
                             baseline_images=str(baseline_images) if baseline_images else None),
                   baseline_score=base_score, attribution_sum=total, completeness_gap=gap, relative_gap=relative)


# --------------------------------------------------------------------------- occlusion
def _positions(size: int, patch: int, stride: int) -> list[int]:
    if patch > size:
        raise FvisError(f"occlusion patch {patch} is larger than the image ({size} px)")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # cover the last rows/columns too
        starts.append(size - patch)
    return starts


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def occlusion(model: nn.Module, x: torch.Tensor, target=None, *, patch: int | tuple[int, int] = 16,
              stride: int | tuple[int, int] = 8, baseline=0.0, baseline_images: str | Path | None = None,
              seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014): slide a ``patch`` (all channels) over the image with
    ``stride``, replacing it by ``baseline`` (a value, default 0 = black as captum, or a baseline
    kind: ``"blur"``, ``"mean"``, ...), and record the score drop f(x) - f(occluded).
    ``raw`` ``(B, 1, H, W)``: per pixel, the mean drop over the windows covering it (captum's
    definition); ``info["grid"]``: ``(B, ny, nx)`` drop per window. Forward passes only, batched."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    if min(ph, pw, sh, sw) < 1:
        raise FvisError(f"occlusion patch and stride must be >= 1, got patch {patch}, stride {stride}")
    h, w = x.shape[-2:]
    ys, xs = _positions(h, ph, sh), _positions(w, pw, sw)
    windows = [(y, x_) for y in ys for x_ in xs]
    base = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    b = x.shape[0]
    drops = torch.empty(b, len(windows))
    with torch.inference_mode(), Scorer(model, target) as scorer:
        score = scorer.setup(x)
        total = b * len(windows)
        bar = progress_bar(total=total, show=progress, desc="occlusion", unit="img")
        for i in range(b):
            for part in chunks(len(windows), batch_size):
                rows = x[i].expand(part.stop - part.start, -1, -1, -1).clone()
                for r, (y, x_) in enumerate(windows[part]):
                    rows[r, :, y:y + ph, x_:x_ + pw] = base[i, :, y:y + ph, x_:x_ + pw]
                s, _ = scorer(rows, torch.full((rows.shape[0],), i))
                drops[i, part] = score[i] - s.float().cpu()
                bar.update(rows.shape[0])
        bar.close()
    total_map, count = torch.zeros(b, 1, h, w), torch.zeros(1, 1, h, w)
    for j, (y, x_) in enumerate(windows):
        total_map[:, 0, y:y + ph, x_:x_ + pw] += drops[:, j].view(b, 1, 1)
        count[:, 0, y:y + ph, x_:x_ + pw] += 1
    raw = total_map / count
    return finish("occlusion", raw, normalize(raw[:, 0].clamp_min(0), None), scorer, score, t0,
                   plain_settings(patch=[ph, pw], stride=[sh, sw], seed=seed, batch_size=batch_size,
                             baseline=baseline if isinstance(baseline, (int, float, str)) else "tensor"),
                   grid=drops.view(b, len(ys), len(xs)), windows=len(windows))


# --------------------------------------------------------------------------- by name
def _functions() -> dict:
    return {"saliency": saliency, "gradxinput": gradient_x_input, "smoothgrad": smoothgrad,
            "ig": integrated_gradients, "gradcam": gradcam, "guided-gradcam": guided_gradcam,
            "occlusion": occlusion, "mask": isolate_attribution}


def explain(model: nn.Module, x: torch.Tensor, method: str, target=None, **options) -> Attribution:
    """Run one method by name (``METHODS``). Options a method does not take (and ``None``
    values) are ignored, so one settings dict can drive several methods."""
    functions = _functions()
    if method not in functions:
        raise FvisError(f"unknown method {method!r}.{suggest(method, METHODS)} Choose from {', '.join(METHODS)}")
    fn = functions[method]
    accepted = set(inspect.signature(fn).parameters)
    return fn(model, x, target, **{k: v for k, v in options.items() if k in accepted and v is not None})


# --------------------------------------------------------------------------- writing
def _item(v, i: int):
    """Batch item ``i`` of a per-item info value, as plain JSON (``None`` for bulky maps)."""
    if isinstance(v, torch.Tensor):
        return v.tolist() if v.dim() == 0 else v[i].item() if v.dim() == 1 else None
    return v


def save_attributions(attributions: Sequence[Attribution], image: torch.Tensor, out: str | Path, *,
                      meta: dict | None = None, fmt: str = "npy", class_names=None) -> list[Path]:
    """Write each attribution of ``image`` ``(C, H, W)``: ``<method>.npy`` (or ``.safetensors``,
    with the heatmap too) holding ``raw`` of one item, ``<method>_heatmap.png``,
    ``<method>_overlay.png`` and ``<method>.json`` (settings, class, score, probability, method
    info such as the IG completeness gap, seconds, versions); for ``mask`` also ``mask_kept.png``. Attributions with several items
    (one class each, same image) get ``_<class name>`` suffixes, and a mask with several items
    also ``mask_shared_*`` (the minimum of the masks). Several outputs: ``comparison.png``."""
    if fmt not in ("npy", "safetensors"):
        raise FvisError(f"unknown raw format {fmt!r}: npy or safetensors")
    out = Path(out)
    image = (image[0] if image.dim() == 4 else image).cpu()
    written, tiles, labels = [], [image], ["input"]

    def name_of(cls: int) -> str:
        return class_names[cls] if class_names and cls >= 0 else (str(cls) if cls >= 0 else "objective")

    for a in attributions:
        items = a.raw.shape[0]
        for i in range(items):
            cls = int(a.target[i])
            stem = a.method if items == 1 else f"{a.method}_{slug(name_of(cls))}"
            raw = a.raw[i].contiguous()
            if fmt == "npy":
                written.append(atomic_write(out / f"{stem}.npy", lambda f: np.save(f, raw.numpy())))
            else:
                data = save_safetensors({"attribution": raw, "heatmap": a.heatmap[i].contiguous()}, metadata={"method": a.method})
                written.append(atomic_write(out / f"{stem}.safetensors", lambda f: f.write(data)))
            written.append(save_image(colorize(a.heatmap[i]), out / f"{stem}_heatmap.png"))
            over = overlay(image, a.heatmap[i])
            written.append(save_image(over, out / f"{stem}_overlay.png"))
            if a.method == "mask":  # the image as the mask keeps it
                written.append(save_image(spotlight(image, a.raw[i, 0]), out / f"{stem}_kept.png"))
            info = {k: _item(v, i) for k, v in a.info.items() if k not in ("cam", "grid", "probability")}
            prob = {"probability": float(a.info["probability"][i])} if "probability" in a.info else {}
            written.append(write_json({
                **(meta or {}), "method": a.method, "class": cls if cls >= 0 else None,
                "class_name": name_of(cls) if cls >= 0 else None, "score": float(a.score[i]), **prob,
                "settings": a.settings, "info": info, "seconds": round(a.seconds, 3),
                "raw": {"file": f"{stem}.{fmt}", "shape": list(raw.shape), "dtype": "float32"},
                "versions": versions(),
            }, out / f"{stem}.json"))
            tiles.append(over)
            gap = f" gap {float(a.info['relative_gap'][i]):.2%}" if "relative_gap" in a.info else ""
            labels.append(a.method + (f" {name_of(cls)}" if items > 1 else "") + gap)
        if a.method == "mask" and items > 1:  # the parts the classes share
            shared = a.raw.amin(0)
            written.append(atomic_write(out / "mask_shared.npy", lambda f: np.save(f, shared.numpy())))
            over = overlay(image, shared[0] / shared.max().clamp_min(1e-12))
            written.append(save_image(over, out / "mask_shared_overlay.png"))
            tiles.append(over)
            labels.append("mask shared: " + ", ".join(name_of(int(c)) for c in a.target))
    if len(tiles) > 2:
        written.append(contact_sheet(tiles, labels, out / "comparison.png", columns=min(len(tiles), 5)))
    return written
