"""Attribution methods: which pixels of an input drive a class logit (or any objective).

Every method takes images ``x`` ``(B, C, H, W)`` in [0, 1] (or one ``(C, H, W)`` image) and a
``target``: ``None`` (each item's top-1 class), a class index or name, one class per item, or an
:class:`objectives.Objective` (e.g. ``obj.channel("_blocks.8", 33)``: attribute a channel).
All run batched, in eval mode with frozen weights, and leave the model as they found it.
They return an :class:`Attribution`: ``raw`` (the method's own output, signed, ``(B, C, H, W)``
or ``(B, 1, H, W)``), ``heatmap`` ``(B, H, W)`` in [0, 1] for display, scores and per-method info.

Methods: :func:`saliency`, :func:`gradient_x_input`, :func:`smoothgrad`,
:func:`integrated_gradients`, :func:`gradcam`, :func:`guided_gradcam`, :func:`occlusion`;
the optimization-based mask lives in :mod:`fvis.isolate`. :func:`explain` runs any by name.
"""
from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .baselines import make_baseline
from .classes import resolve_class
from .errors import FvisError
from .hooks import OUTPUT, Capture, frozen, named_layers, resolve_layers

METHODS = ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "guided-gradcam", "occlusion", "mask")


@dataclass
class Attribution:
    """What an attribution method returns (all tensors on the CPU).

    ``raw``: the attribution itself, ``(B, C, H, W)`` (per input value) or ``(B, 1, H, W)``
    (per pixel: Grad-CAM upsampled, occlusion, mask). ``heatmap``: ``(B, H, W)`` in [0, 1].
    ``target``: class index per item (``-1`` for an objective). ``score``: f(x) per item
    (target logit or objective value). ``info``: method specifics (completeness gap, layer, ...).
    """

    method: str
    raw: torch.Tensor
    heatmap: torch.Tensor
    target: torch.Tensor
    score: torch.Tensor
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- scoring
class _Scorer:
    """``f(x)`` per row: the logit of each row's target class, or an objective's value.

    Runs through :class:`fvis.hooks.Capture` (only the needed layers hooked; truncated forward
    when the score does not need the model output). ``extra`` layers are captured as well.
    """

    def __init__(self, model: nn.Module, target, extra: Sequence[str] = ()):
        from objectives import Objective

        self.model = model
        self.objective = target if isinstance(target, Objective) else None
        self.target = target
        layers = set(self.objective.layers) if self.objective is not None else {OUTPUT}
        self.capture = Capture(model, layers | set(extra))
        self.classes: torch.Tensor | None = None
        self.probability: torch.Tensor | None = None  # softmax p of each item's class (class targets)
        self.dry = None  # activations of the dry forward

    def __enter__(self) -> "_Scorer":
        self.capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.capture.__exit__(*exc)

    def setup(self, x: torch.Tensor) -> torch.Tensor:
        """Dry forward on ``x``: validates layers/targets, resolves classes, plans truncation; ``f(x)``."""
        acts = self.dry = self.capture.plan(x)
        if self.objective is not None:
            self.objective.check(acts)
            self.classes = torch.full((x.shape[0],), -1, dtype=torch.long)
            return self.objective(acts).detach().float().cpu()
        out = acts[OUTPUT]
        if out.dim() != 2:
            raise FvisError(f"class attribution needs (B, classes) model output, got {tuple(out.shape)}; "
                            f"pass an objective instead")
        self.classes = _resolve_targets(self.target, out, getattr(self.model, "class_names", None))
        self.probability = out.float().softmax(1).gather(1, self.classes.to(out.device)[:, None])[:, 0].cpu()
        return out.gather(1, self.classes.to(out.device)[:, None])[:, 0].detach().float().cpu()

    def __call__(self, x: torch.Tensor, items: torch.Tensor):
        """Scores ``(n,)`` of rows ``x`` ``(n, C, H, W)``; ``items`` ``(n,)`` says which batch item
        (hence which class) each row belongs to. Also returns the activations."""
        acts = self.capture.forward(x)
        if self.objective is not None:
            return self.objective(acts), acts
        out = acts[OUTPUT]
        return out.gather(1, self.classes[items].to(out.device)[:, None])[:, 0], acts


def _resolve_targets(target, out: torch.Tensor, names) -> torch.Tensor:
    b, k = out.shape
    if target is None:
        return out.argmax(1).cpu()
    if isinstance(target, torch.Tensor):
        target = target.tolist() if target.dim() else int(target)
    if isinstance(target, (int, str)):
        return torch.full((b,), resolve_class(target, names, k), dtype=torch.long)
    target = list(target)
    if len(target) != b:
        raise FvisError(f"{len(target)} targets for a batch of {b} images")
    return torch.tensor([resolve_class(t, names, k) for t in target], dtype=torch.long)


def _as_batch(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise FvisError(f"expected an image tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise FvisError(f"expected images (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    channels = getattr(model, "channels", x.shape[1])
    if x.shape[1] != channels:
        raise FvisError(f"the model takes {channels}-channel images, got {x.shape[1]} channels")
    device = next(iter(model.parameters()), torch.empty(0)).device
    return x.detach().float().to(device)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _gradients(scorer: _Scorer, rows, n: int, items: torch.Tensor, batch_size: int, progress: bool, desc: str):
    """Yield ``(slice, gradient, scores)`` per chunk: the gradient of each row's score w.r.t. the
    row. ``rows(slice)`` builds the rows ``(n, C, H, W)`` of a chunk (so long paths never sit
    in memory at once); ``items[i]`` is the batch item (hence the class) of row ``i``."""
    parts = list(_chunks(n, batch_size))
    for part in tqdm(parts, disable=not progress or len(parts) < 2, desc=desc, unit="batch", leave=False):
        xi = rows(part).detach().clone().requires_grad_(True)
        s, _ = scorer(xi, items[part])
        (g,) = torch.autograd.grad(s.sum(), xi)
        yield part, g, s.detach().float().cpu()


def _plain_gradient(scorer: _Scorer, x: torch.Tensor, batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    grads = torch.empty_like(x)
    for part, g, _ in _gradients(scorer, lambda p: x[p], x.shape[0], torch.arange(x.shape[0]), batch_size,
                                 progress, desc):
        grads[part] = g
    return grads


def _settings(**kw) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else str(v)) for k, v in kw.items()}


def _finish(method, raw, heatmap, scorer, score, t0, settings, **info) -> Attribution:
    if scorer.probability is not None:
        info = {"probability": scorer.probability, **info}
    return Attribution(method, raw.detach().float().cpu(), heatmap.detach().float().cpu(), scorer.classes.clone(),
                       score, settings, info, time.perf_counter() - t0)


# --------------------------------------------------------------------------- display
def normalize(maps: torch.Tensor, quantile: float | None = 0.99) -> torch.Tensor:
    """``(B, H, W)`` non-negative maps -> [0, 1] per item, dividing by the ``quantile``
    (robust to a few extreme pixels) or by the max (``quantile=None``)."""
    flat = maps.flatten(1).float()
    top = flat.quantile(quantile, dim=1) if quantile is not None else flat.max(1).values
    top = torch.where(top > 0, top, flat.max(1).values).clamp_min(1e-12)
    return (maps / top.view(-1, 1, 1)).clamp(0, 1)


def reduce_channels(raw: torch.Tensor, how: str) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H, W)``: ``"absmax"`` max over channels of |raw|, ``"abssum"`` |sum over
    channels|, ``"positive"`` positive part of the channel sum."""
    if how == "absmax":
        return raw.abs().amax(1)
    if how == "abssum":
        return raw.sum(1).abs()
    if how == "positive":
        return raw.sum(1).clamp_min(0)
    raise ValueError(f"unknown reduction {how!r}")


_INFERNO = torch.tensor([[0.001, 0.0, 0.014], [0.129, 0.047, 0.291], [0.342, 0.062, 0.429],
                         [0.541, 0.135, 0.415], [0.736, 0.216, 0.33], [0.894, 0.353, 0.194],
                         [0.978, 0.558, 0.035], [0.975, 0.798, 0.206], [0.988, 0.998, 0.645]])


def colorize(heatmap: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` in [0, 1] -> ``(3, H, W)`` RGB with the inferno colour map."""
    t = heatmap.float().clamp(0, 1) * (len(_INFERNO) - 1)
    lo = t.floor().long().clamp(max=len(_INFERNO) - 2)
    frac = (t - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac
    return rgb.permute(2, 0, 1)


def spotlight(image: torch.Tensor, mask: torch.Tensor, floor: float = 0.15) -> torch.Tensor:
    """``image`` ``(C, H, W)`` dimmed where ``mask`` ``(H, W)`` in [0, 1] is low: what a mask keeps."""
    if mask.shape[-2:] != image.shape[-2:]:
        mask = F.interpolate(mask[None, None].float(), image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return image.float().cpu() * (floor + (1 - floor) * mask.float().cpu().clamp(0, 1))[None]


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """Heatmap ``(h, w)`` in [0, 1] over ``image`` ``(C, H, W)``: coloured where the map is high.
    The map is resized bilinearly to the image if needed."""
    h, w = image.shape[-2:]
    if heatmap.shape[-2:] != (h, w):
        heatmap = F.interpolate(heatmap[None, None].float(), (h, w), mode="bilinear", align_corners=False)[0, 0]
    image = image.float().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    a = alpha * heatmap.float().cpu().clamp(0, 1)[None]
    return image * (1 - a) + colorize(heatmap.cpu()) * a


# --------------------------------------------------------------------------- gradient methods
def saliency(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
             progress: bool = True) -> Attribution:
    """Vanilla gradient (Simonyan et al. 2013). ``raw``: d score / d x ``(B, C, H, W)``;
    heatmap: max over channels of |gradient|."""
    t0 = time.perf_counter()
    x = _as_batch(x, model)
    with frozen(model), _Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = _plain_gradient(scorer, x, batch_size, progress, "saliency")
    return _finish("saliency", grads, normalize(reduce_channels(grads, "absmax")), scorer, score, t0,
                   _settings(batch_size=batch_size))


def gradient_x_input(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
                     progress: bool = True) -> Attribution:
    """Gradient x input (Shrikumar et al. 2016), input in [0, 1] (black is the implicit reference).
    ``raw`` ``(B, C, H, W)``; heatmap: |sum over channels|."""
    t0 = time.perf_counter()
    x = _as_batch(x, model)
    with frozen(model), _Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = _plain_gradient(scorer, x, batch_size, progress, "gradxinput")
    raw = grads * x
    return _finish("gradxinput", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   _settings(batch_size=batch_size))


def smoothgrad(model: nn.Module, x: torch.Tensor, target=None, *, samples: int = 25, noise: float = 0.15,
               seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies,
    Gaussian noise of std ``noise * (max(x) - min(x))`` per item (seeded). ``raw``: mean gradient
    ``(B, C, H, W)``; heatmap: max over channels of |mean gradient|."""
    if samples < 1:
        raise FvisError(f"smoothgrad needs samples >= 1, got {samples}")
    t0 = time.perf_counter()
    x = _as_batch(x, model)
    b, shape = x.shape[0], tuple(x.shape[1:])
    g = torch.Generator().manual_seed(seed)
    sd = (noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))).cpu()
    eps = torch.randn((b, samples) + shape, generator=g) * sd.view(b, 1, 1, 1, 1)  # drawn once: seeded, chunk-free
    items = torch.arange(b).repeat_interleave(samples)

    def rows(part):
        idx = torch.arange(part.start, part.stop)
        return x[idx // samples] + eps.view(-1, *shape)[idx].to(x.device)

    total = torch.zeros_like(x)
    with frozen(model), _Scorer(model, target) as scorer:
        score = scorer.setup(x)
        for part, grad, _ in _gradients(scorer, rows, b * samples, items, batch_size, progress, "smoothgrad"):
            total.index_add_(0, items[part].to(x.device), grad)
    raw = total / samples
    return _finish("smoothgrad", raw, normalize(reduce_channels(raw, "absmax")), scorer, score, t0,
                   _settings(samples=samples, noise=noise, seed=seed, batch_size=batch_size))


def _path(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and quadrature weights (summing to 1) for the path integral."""
    import numpy as np

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
    x = _as_batch(x, model)
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
    with frozen(model), _Scorer(model, target) as scorer:
        score = scorer.setup(x)
        with torch.no_grad():
            base_score = scorer(x0, torch.arange(b))[0].float().cpu()
        for part, grad, _ in _gradients(scorer, rows, b * steps, items, batch_size, progress, "integrated gradients"):
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
    return _finish("ig", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   _settings(baseline=name if not isinstance(baseline, (int, float)) else float(baseline),
                             steps=steps, method=method, seed=seed, batch_size=batch_size,
                             baseline_images=str(baseline_images) if baseline_images else None),
                   baseline_score=base_score, attribution_sum=total, completeness_gap=gap, relative_gap=relative)


# --------------------------------------------------------------------------- Grad-CAM
def default_cam_layer(model: nn.Module) -> str:
    """The last ``nn.Conv2d`` of the network (Grad-CAM's usual choice)."""
    convs = [name for name, m in named_layers(model).items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise FvisError("the model has no Conv2d layer: pass a layer with spatial output (--layer)")
    return convs[-1]


def _grad_of_captured(captured: torch.Tensor):
    """Arrange to receive d score / d (layer output) during the next backward.

    ``Capture`` stores a clone of each layer output (safe against later in-place ops), and the
    network continues from the original tensor, so the gradient is read at the autograd node
    that produced the original (the clone's input). Returns a dict filled with ``"grad"``.
    """
    box: dict = {}
    if captured.grad_fn is None or not captured.grad_fn.next_functions:
        raise FvisError("the layer output does not depend on the input (no gradient to take)")
    node, index = captured.grad_fn.next_functions[0]
    if node is None:
        raise FvisError("the layer output does not depend on the input (no gradient to take)")

    def hook(grad_inputs, grad_outputs):
        box["grad"] = grad_outputs[index]

    box["handle"] = node.register_hook(hook)
    return box


def _check_spatial(act: torch.Tensor, layer: str, model: nn.Module) -> None:
    if act.dim() != 4 or act.shape[-1] * act.shape[-2] < 2:
        raise FvisError(f"Grad-CAM needs a layer with spatial output (B, C, H, W); layer {layer!r} gives "
                        f"{tuple(act.shape)}. Try a conv layer such as {default_cam_layer(model)}")


def check_cam_layer(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> str:
    """The Grad-CAM layer (default: last Conv2d), checked to exist and give ``(B, C, H, W)`` with
    ``H * W > 1`` (one truncated forward on one image); FvisError otherwise."""
    layer = layer or default_cam_layer(model)
    resolve_layers(model, [layer])  # unknown layer -> FvisError with suggestions
    if layer == OUTPUT:
        raise FvisError("Grad-CAM needs a layer with spatial output (B, C, H, W), not the model output")
    x = _as_batch(x, model)
    with frozen(model), Capture(model, [layer]) as cap:
        _check_spatial(cap.plan(x[:1])[layer], layer, model)
    return layer


def _cam(model, x, target, layer, batch_size, progress):
    """Grad-CAM maps at layer resolution ``(B, 1, h, w)``, scores and the scorer."""
    layer = layer or default_cam_layer(model)
    resolve_layers(model, [layer])  # unknown layer -> FvisError with suggestions
    if layer == OUTPUT:
        raise FvisError("Grad-CAM needs a layer with spatial output (B, C, H, W), not the model output")
    with frozen(model), _Scorer(model, target, extra=[layer]) as scorer:
        score = scorer.setup(x)
        _check_spatial(scorer.dry[layer], layer, model)
        cams = []
        parts = list(_chunks(x.shape[0], batch_size))
        for part in tqdm(parts, disable=not progress or len(parts) < 2, desc="grad-cam", unit="batch", leave=False):
            xi = x[part].clone().requires_grad_(True)  # so every layer output is in the graph
            s, acts = scorer(xi, torch.arange(x.shape[0])[part])
            act = acts[layer]
            box = _grad_of_captured(act)
            try:
                s.sum().backward()
            finally:
                box["handle"].remove()
            if box.get("grad") is None:
                raise FvisError(f"no gradient reached layer {layer!r}")
            weights = box["grad"].float().mean((2, 3), keepdim=True)  # (n, K, 1, 1): alpha_k
            cams.append(F.relu((weights * act.detach().float()).sum(1, keepdim=True)).cpu())
    return torch.cat(cams), score, scorer, layer


def gradcam(model: nn.Module, x: torch.Tensor, target=None, *, layer: str | None = None, batch_size: int = 16,
            progress: bool = True) -> Attribution:
    """Grad-CAM (Selvaraju et al. 2017) on ``layer`` (default: the last Conv2d): ReLU of the
    activation maps weighted by their spatially averaged gradients. ``raw`` ``(B, 1, H, W)``:
    the map upsampled bilinearly to the input; ``info["cam"]``: ``(B, 1, h, w)`` at layer
    resolution. A layer without spatial output is an error."""
    t0 = time.perf_counter()
    x = _as_batch(x, model)
    cam, score, scorer, layer = _cam(model, x, target, layer, batch_size, progress)
    up = F.interpolate(cam, x.shape[-2:], mode="bilinear", align_corners=False)
    return _finish("gradcam", up, normalize(up[:, 0], None), scorer, score, t0,
                   _settings(layer=layer, batch_size=batch_size), cam=cam)


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward passes only positive gradients (guided backpropagation)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0)


GUIDED_TYPES = (nn.ReLU, nn.ReLU6)


def guided_backprop(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
                    progress: bool = True) -> Attribution:
    """Guided backpropagation (Springenberg et al. 2014): the gradient with only positive
    gradients passed back through every ReLU / ReLU6 module. Done with forward hooks that wrap
    each activation's output in a positive-gradient identity; the hooks are removed in
    ``finally``. ``raw`` ``(B, C, H, W)``."""
    t0 = time.perf_counter()
    x = _as_batch(x, model)
    relus = [m for m in named_layers(model).values() if isinstance(m, GUIDED_TYPES)]
    if not relus:
        warnings.warn("fvis: guided backprop found no nn.ReLU/ReLU6 modules (functional activations cannot be "
                      "hooked); the result is the plain gradient")
    handles = []
    try:
        for m in relus:
            handles.append(m.register_forward_hook(lambda mod, inp, out: _PositiveGrad.apply(out)))
        with frozen(model), _Scorer(model, target) as scorer:
            score = scorer.setup(x)
            grads = _plain_gradient(scorer, x, batch_size, progress, "guided backprop")
    finally:
        for h in handles:
            h.remove()
    return _finish("guided-backprop", grads, normalize(reduce_channels(grads, "absmax")), scorer, score, t0,
                   _settings(batch_size=batch_size), relu_modules=len(relus))


def guided_gradcam(model: nn.Module, x: torch.Tensor, target=None, *, layer: str | None = None,
                   batch_size: int = 16, progress: bool = True) -> Attribution:
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.
    ``raw`` ``(B, C, H, W)``; heatmap: max over channels of |raw|."""
    t0 = time.perf_counter()
    cam = gradcam(model, x, target, layer=layer, batch_size=batch_size, progress=progress)
    target = cam.target.tolist() if target is None else target
    guided = guided_backprop(model, x, target, batch_size=batch_size, progress=progress)
    raw = guided.raw * cam.raw
    return Attribution("guided-gradcam", raw, normalize(reduce_channels(raw, "absmax")), cam.target, cam.score,
                       cam.settings, {"cam": cam.info["cam"], "relu_modules": guided.info["relu_modules"]},
                       time.perf_counter() - t0)


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
    x = _as_batch(x, model)
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    if min(ph, pw, sh, sw) < 1:
        raise FvisError(f"occlusion patch and stride must be >= 1, got patch {patch}, stride {stride}")
    h, w = x.shape[-2:]
    ys, xs = _positions(h, ph, sh), _positions(w, pw, sw)
    windows = [(y, x_) for y in ys for x_ in xs]
    base = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    b = x.shape[0]
    drops = torch.empty(b, len(windows))
    with frozen(model), torch.inference_mode(), _Scorer(model, target) as scorer:
        score = scorer.setup(x)
        total = b * len(windows)
        bar = tqdm(total=total, disable=not progress, desc="occlusion", unit="img", leave=False)
        for i in range(b):
            for part in _chunks(len(windows), batch_size):
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
    return _finish("occlusion", raw, normalize(raw[:, 0].clamp_min(0), None), scorer, score, t0,
                   _settings(patch=[ph, pw], stride=[sh, sw], seed=seed, batch_size=batch_size,
                             baseline=baseline if isinstance(baseline, (int, float, str)) else "tensor"),
                   grid=drops.view(b, len(ys), len(xs)), windows=len(windows))


# --------------------------------------------------------------------------- by name
def _functions() -> dict:
    from .isolate import isolate_attribution  # isolate builds on this module

    return {"saliency": saliency, "gradxinput": gradient_x_input, "smoothgrad": smoothgrad,
            "ig": integrated_gradients, "gradcam": gradcam, "guided-gradcam": guided_gradcam,
            "occlusion": occlusion, "mask": isolate_attribution}


def explain(model: nn.Module, x: torch.Tensor, method: str, target=None, **options) -> Attribution:
    """Run one method by name (``METHODS``). Options a method does not take (and ``None``
    values) are ignored, so one settings dict can drive several methods."""
    from .errors import suggest

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
    import numpy as np

    from .io import _atomic_write, contact_sheet, save_image, versions, write_json
    from .render import slug

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
                written.append(_atomic_write(out / f"{stem}.npy", lambda f: np.save(f, raw.numpy())))
            else:
                from safetensors.torch import save

                data = save({"attribution": raw, "heatmap": a.heatmap[i].contiguous()}, metadata={"method": a.method})
                written.append(_atomic_write(out / f"{stem}.safetensors", lambda f: f.write(data)))
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
            written.append(_atomic_write(out / "mask_shared.npy", lambda f: np.save(f, shared.numpy())))
            over = overlay(image, shared[0] / shared.max().clamp_min(1e-12))
            written.append(save_image(over, out / "mask_shared_overlay.png"))
            tiles.append(over)
            labels.append("mask shared: " + ", ".join(name_of(int(c)) for c in a.target))
    if len(tiles) > 2:
        written.append(contact_sheet(tiles, labels, out / "comparison.png", columns=min(len(tiles), 5)))
    return written


# --------------------------------------------------------------------------- command line
def _baseline_arg(text: str | None):
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def run_cli(args) -> None:
    """``fvis explain``: every requested method on one image; files as :func:`save_attributions`."""
    from .datasets import warnings_as_lines
    from .io import check_writable, load_image
    from .models import load

    methods = [m.strip() for spec in args.method for m in spec.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            from .errors import suggest

            raise FvisError(f"unknown method {m!r}.{suggest(m, METHODS)} Choose from {', '.join(METHODS)}")
    if args.objective and args.class_ is not None:
        raise FvisError("give --class or --objective, not both")
    out = check_writable(args.out)
    model = load(args.model, args.weights, args.device)
    image = load_image(args.image, model.input_size, model.channels)
    with warnings_as_lines():
        _run(args, methods, out, model, image)


def _run(args, methods, out, model, image) -> None:
    import objectives

    classes = args.class_ or []
    if args.objective:
        target = objectives.parse(args.objective, model.class_names)
    else:  # one batch item per class (same image): one run per method for all classes
        target = [resolve_class(c, model.class_names) for c in classes] if len(classes) > 1 else (classes or [None])[0]
    x = image[None].expand(max(len(classes), 1), -1, -1, -1).to(args.device)
    baseline = _baseline_arg(args.baseline)
    if baseline is not None:  # validate (and read a mean image) once, before any long work
        baseline = make_baseline(x, baseline, seed=args.seed, folder=args.baseline_images)
    if any(m in ("gradcam", "guided-gradcam") for m in methods):
        check_cam_layer(model, x, args.layer)
    options = dict(layer=args.layer, baseline=baseline, baseline_images=args.baseline_images, steps=args.steps,
                   samples=args.samples, noise=args.noise, patch=args.patch, stride=args.stride,
                   batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    results = []
    for m in methods:
        opts = dict(options, steps=args.mask_steps) if m == "mask" else options
        a = explain(model, x, m, target, **opts)
        if baseline is not None and "baseline" in a.settings:
            a.settings["baseline"] = args.baseline
        results.append(a)
        for i in range(a.raw.shape[0]):
            cls = int(a.target[i])
            what = f"objective {args.objective}" if cls < 0 else (
                f"class {cls} {model.class_names[cls]}" if model.class_names else f"class {cls}")
            extra = ""
            if "relative_gap" in a.info:
                extra = (f"  completeness gap {float(a.info['completeness_gap'][i]):+.4f} "
                         f"({float(a.info['relative_gap'][i]):.2%} of f(x) - f(baseline))")
            if "kept" in a.info:
                extra = f"  kept {float(a.info['kept'][i]):.2f} of the score with {float(a.info['area'][i]):.1%} of the image"
            print(f"{m:<15} {what}  score {float(a.score[i]):.4g}{extra}  {a.seconds:.1f} s")
    meta = {"model": model.name, "image": str(args.image), "target": args.objective or classes or None}
    written = save_attributions(results, image, out, meta=meta, fmt=args.format, class_names=model.class_names)
    print(f"{len(written)} files in {out}/")
