"""Layer activations and class-logit gradients at layers, computed once per image and cached.

Concept and random images need only their activations (one truncated, gradient-free forward per
image with :class:`fvis.hooks.Capture`); class images need only the gradient of the target logit
with respect to each layer's output (one forward and one backward per image, for every layer at
once). Both are cached as safetensors, one file per layer, keyed by the model's weights, the layer,
the pooling, the input size and the images (file names, sizes and times for a folder, the bytes
for a tensor), under ``$FVIS_CACHE/tcav/``. The generic parts (activations of images, the cache) live in
:mod:`fvis.features.activations` and are re-exported here.

Representations (``pool``): ``"flatten"`` (the paper's and captum's: the whole ``C*H*W`` map) or
``"mean"`` (the per-channel spatial mean, length ``C``; a CAV in this space is a plain channel
direction, which :func:`objectives.direction` renders at any image size). For ``"mean"``, the
gradient is the spatial *sum* of the gradient map: moving every position of the map by ``v``
changes the logit by ``sum_hw grad[:, h, w] . v``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch

from ..errors import FvisError
from ..features.activations import (POOLS, Images, _device, _represent, cached, compute_activations,  # noqa: F401
                                    images_key, load_images, model_fingerprint)
from ..hooks import frozen, resolve_layers


def check_layers(model, layers: Sequence[str]) -> list[str]:
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise FvisError("give at least one layer")
    mods = resolve_layers(model, layers)  # unknown layer: FvisError with suggestions
    for name, m in mods.items():
        if m is None:
            raise FvisError(f"layer {name!r}: TCAV needs an internal layer, not the model output")
    return layers


def compute_gradients(model, images: torch.Tensor, layers: Sequence[str], target: int, pool: str = "flatten",
                      batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``{layer: (N, D)}``: the gradient of logit ``target`` with respect to each layer's output,
    for every image: one forward and one backward per image, all layers at once. The backward stops
    at the earliest hooked layer (its output becomes a leaf; the model's weights get no gradient)."""
    device = _device(model)
    modules = resolve_layers(model, layers)
    store: dict[str, torch.Tensor] = {}

    def hook(name, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise FvisError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
        z = output if output.requires_grad else output.detach().requires_grad_(True)
        store[name] = z
        return z.clone()  # the rest of the network runs on a copy: in-place ops cannot touch z

    parts: dict[str, list] = {l: [] for l in layers}
    handles = []
    with frozen(model):
        try:
            for name in layers:
                handles.append(modules[name].register_forward_hook(partial(hook, name)))
            for i in range(0, len(images), batch_size):
                store.clear()
                with torch.enable_grad():
                    out = model(images[i:i + batch_size].to(device))
                    if not isinstance(out, torch.Tensor) or out.dim() != 2:
                        raise FvisError("TCAV needs a classifier: the model output must be (batch, classes)")
                    if not 0 <= target < out.shape[1]:
                        raise FvisError(f"target class {target} out of range: the model has {out.shape[1]} classes")
                    missing = [l for l in layers if l not in store]
                    if missing:
                        raise FvisError(f"layer {missing[0]!r} did not run in the forward pass")
                    grads = torch.autograd.grad(out[:, target].sum(), [store[l] for l in layers], allow_unused=True)
                for l, g in zip(layers, grads):
                    if g is None:
                        g = torch.zeros_like(store[l])
                    parts[l].append(_represent(g, pool, grad=True).cpu())
        finally:
            for h in handles:
                h.remove()
    return {l: torch.cat(p) for l, p in parts.items()}
