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

from ..classes import resolve_class
from ..errors import FvisError
from ..features.activations import (CPU_BATCH, POOLS, Images, _device, _represent, batch_for, cached,  # noqa: F401
                                    compute_activations, images_key, load_images, model_fingerprint)
from ..files import list_images
from ..hooks import frozen, resolve_layers


def check_target(model, target: int | str) -> tuple[int, str]:
    """``(index, name)`` of a class index or name, checked against the model before any long work:
    by its ``class_names``, else by the width of its output on one blank image."""
    names = getattr(model, "class_names", None)
    if names is not None:
        index = resolve_class(target, names)
        return index, names[index]
    if isinstance(target, str) and not target.strip().lstrip("-").isdigit():
        raise FvisError(f"target {target!r} is a name but the model has no class names: give an index")
    index = int(target)
    x = torch.zeros(1, getattr(model, "channels", 3), *model.input_size, device=_device(model))
    with torch.no_grad(), frozen(model):
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise FvisError("TCAV needs a classifier: the model output must be (batch, classes)")
    if not 0 <= index < out.shape[1]:
        raise FvisError(f"target class {index} out of range: the model has {out.shape[1]} classes "
                        f"(valid 0..{out.shape[1] - 1})")
    return index, str(index)


def count_images(images: Images) -> int:
    """How many images a tensor or a folder holds (nothing decoded)."""
    if isinstance(images, torch.Tensor):
        return len(images)
    return len(list_images(images))


def check_counts(concepts: dict, random: Images | int | None, runs: int, min_images: int,
                 random_size: int | None = None) -> None:
    """The image counts a TCAV run needs, checked before any forward pass (``random``: the pool,
    or its size; ``None``: only the concepts')."""
    sizes = {name: count_images(src) for name, src in concepts.items()}
    for name, n in sizes.items():
        if n < min_images:
            raise FvisError(f"concept {name!r} has {n} images; each run needs at least {min_images} "
                            f"(some are held out to measure the CAV accuracy)")
    if random is None:
        return
    pool_n = random if isinstance(random, int) else count_images(random)
    m = random_size or min(max(sizes.values()), pool_n // runs)
    if m < min_images or runs * m > pool_n:
        need = runs * max(m, min_images)
        raise FvisError(f"the random pool has {pool_n} images, but {runs} disjoint random sets of "
                        f"{max(m, min_images)} need {need}: add images, use crops "
                        f"(fvis.concepts.random_crops / --random-crops), or fewer runs")


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
                      batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """``{layer: (N, D)}``: the gradient of logit ``target`` with respect to each layer's output,
    for every image: one forward and one backward per image, all layers at once. The backward stops
    at the earliest hooked layer (its output becomes a leaf; the model's weights get no gradient).
    On the CPU the input goes in channels-last (plain layout again if the model fails on it)."""
    device = _device(model)
    batch_size = batch_for(model, batch_size)
    layout = [device.type == "cpu" and images.dim() == 4]
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
                    out = _forward(model, images[i:i + batch_size].to(device), layout)
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


def _forward(model, x: torch.Tensor, layout: list[bool]):
    """``model(x)``, channels-last while ``layout[0]``; a model that fails on it (e.g. a ``.view``
    of a feature map) turns it off for good."""
    if not layout[0]:
        return model(x)
    try:
        return model(x.contiguous(memory_format=torch.channels_last))
    except FvisError:
        raise
    except Exception:
        layout[0] = False
        return model(x)
