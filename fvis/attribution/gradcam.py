"""Grad-CAM (Selvaraju et al. 2017), guided backpropagation (Springenberg et al. 2015) and their
product, guided Grad-CAM: class-discriminative maps from a convolutional layer. Part of
:mod:`fvis.attribution` (which runs any method by name)."""
from __future__ import annotations

import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..display import normalize, reduce_channels
from ..errors import FvisError
from ..hooks import OUTPUT, capturing, named_layers, resolve_layers
from ..progress import progress_bar
from .scorer import Attribution, Scorer, as_batch, chunks, finish, plain_gradient, plain_settings


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
    x = as_batch(x, model)
    with capturing(model, [layer]) as cap:
        _check_spatial(cap.plan(x[:1])[layer], layer, model)
    return layer


def _cam(model, x, target, layer, batch_size, progress):
    """Grad-CAM maps at layer resolution ``(B, 1, h, w)``, scores and the scorer."""
    layer = layer or default_cam_layer(model)
    resolve_layers(model, [layer])  # unknown layer -> FvisError with suggestions
    if layer == OUTPUT:
        raise FvisError("Grad-CAM needs a layer with spatial output (B, C, H, W), not the model output")
    with Scorer(model, target, extra=[layer]) as scorer:
        score = scorer.setup(x)
        _check_spatial(scorer.dry[layer], layer, model)
        cams = []
        parts = list(chunks(x.shape[0], batch_size))
        for part in progress_bar(parts, show=progress and len(parts) >= 2, desc="grad-cam", unit="batch"):
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
    x = as_batch(x, model)
    cam, score, scorer, layer = _cam(model, x, target, layer, batch_size, progress)
    up = F.interpolate(cam, x.shape[-2:], mode="bilinear", align_corners=False)
    return finish("gradcam", up, normalize(up[:, 0], None), scorer, score, t0,
                   plain_settings(layer=layer, batch_size=batch_size), cam=cam)


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
    x = as_batch(x, model)
    relus = [m for m in named_layers(model).values() if isinstance(m, GUIDED_TYPES)]
    if not relus:
        warnings.warn("fvis: guided backprop found no nn.ReLU/ReLU6 modules (functional activations cannot be "
                      "hooked); the result is the plain gradient")
    handles = []
    try:
        for m in relus:
            handles.append(m.register_forward_hook(lambda mod, inp, out: _PositiveGrad.apply(out)))
        with Scorer(model, target) as scorer:
            score = scorer.setup(x)
            grads = plain_gradient(scorer, x, batch_size, progress, "guided backprop")
    finally:
        for h in handles:
            h.remove()
    return finish("guided-backprop", grads, normalize(reduce_channels(grads, "absmax")), scorer, score, t0,
                   plain_settings(batch_size=batch_size), relu_modules=len(relus))


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
