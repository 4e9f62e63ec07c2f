"""Layer activations and class-logit gradients at layers, computed once per image and cached.

Concept and random images need only their activations (one truncated, gradient-free forward per
image with :class:`fvis.hooks.Capture`); class images need only the gradient of the target logit
with respect to each layer's output (one forward and one backward per image, for every layer at
once). Both are cached as safetensors, one file per layer, keyed by the model's weights, the layer,
the pooling, the input size and the images (file names, sizes and times for a folder, the bytes
for a tensor), under ``$FVIS_CACHE/tcav/``.

Representations (``pool``): ``"flatten"`` (the paper's and captum's: the whole ``C*H*W`` map) or
``"mean"`` (the per-channel spatial mean, length ``C``; a CAV in this space is a plain channel
direction, which :func:`objectives.direction` renders at any image size). For ``"mean"``, the
gradient is the spatial *sum* of the gradient map: moving every position of the map by ``v``
changes the logit by ``sum_hw grad[:, h, w] . v``.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Sequence, Union

import torch

from ..errors import FvisError
from ..hooks import Capture, frozen, resolve_layers
from ..io import _atomic_write

POOLS = ("flatten", "mean")
Images = Union[torch.Tensor, str, Path]
CPU_BATCH, DEVICE_BATCH = 4, 32  # images per forward: on one CPU thread batches of 4 ran ~1.5x faster than 32


def batch_for(model, batch_size: int | None) -> int:
    """``batch_size`` or the default for the model's device (small batches stay in the CPU's caches)."""
    return batch_size or (CPU_BATCH if _device(model).type == "cpu" else DEVICE_BATCH)


def model_fingerprint(model) -> str:
    """A digest of the model's name, parameters and buffers (a retrained model never hits the cache)."""
    h = hashlib.sha256(str(getattr(model, "name", type(model).__name__)).encode())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def images_key(images: Images, size) -> str:
    """A digest of an image set: a folder by its files' names, sizes and times; a tensor by its bytes."""
    h = hashlib.sha256(json.dumps(list(size)).encode())
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu().float().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(memoryview(t.view(-1).view(torch.uint8).numpy()))  # no copy of the bytes
    else:
        from ..io import list_images

        for f in list_images(images):
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_images(images: Images, model, what: str = "images") -> torch.Tensor:
    """A folder (resized, centre-cropped to the model's input size) or an ``(N, 3, H, W)`` tensor in [0, 1]."""
    from torchvision.transforms.v2 import functional as F

    from ..datasets import ImageFolder

    size = list(model.input_size)
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != getattr(model, "channels", 3):
            raise FvisError(f"{what}: expected a tensor (N, {getattr(model, 'channels', 3)}, H, W) in [0, 1], "
                            f"got shape {tuple(images.shape)}")
        x = images.detach().float()
        return x if list(x.shape[-2:]) == size else F.resize(x, size, antialias=True).clamp(0, 1)
    data = ImageFolder(images, tuple(size), 32, channels=getattr(model, "channels", 3))
    parts = [x for _, x in data]
    if not parts:
        raise FvisError(f"{what}: no readable images in {images}")
    return torch.cat(parts)


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _represent(t: torch.Tensor, pool: str, grad: bool = False) -> torch.Tensor:
    t = t.float()
    if pool == "mean" and t.dim() > 2:
        return t.flatten(2).sum(-1) if grad else t.flatten(2).mean(-1)
    return t.flatten(1)


def check_target(model, target: int | str) -> tuple[int, str]:
    """``(index, name)`` of a class index or name, checked against the model before any long work:
    by its ``class_names``, else by the width of its output on one blank image."""
    from ..classes import resolve_class

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
    from ..io import list_images

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


@torch.inference_mode()
def compute_activations(model, images: torch.Tensor, layers: Sequence[str], pool: str = "flatten",
                        batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """``{layer: (N, D)}`` float32 on the CPU: one truncated forward per image for all layers
    (channels-last input on the CPU, as :meth:`fvis.hooks.Capture.plan` decides)."""
    device = _device(model)
    batch_size = batch_for(model, batch_size)
    parts: dict[str, list] = {l: [] for l in layers}
    with frozen(model), Capture(model, layers) as cap:
        cap.plan(images[:1].to(device))
        for i in range(0, len(images), batch_size):
            acts = cap.forward(images[i:i + batch_size].to(device))
            for l in layers:
                parts[l].append(_represent(acts[l], pool).cpu())
    return {l: torch.cat(p) for l, p in parts.items()}


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


def cached(kind: str, model, images: Images, layers: Sequence[str], pool: str, cache, compute,
           extra: str = "", fingerprint: str | None = None,
           key: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Per-layer cache around ``compute(images_tensor, missing_layers) -> {layer: (N, D)}``.
    Returns the activations and the loaded image tensor (``None`` if everything came from the cache).
    ``key``: the images' :func:`images_key`, when the caller has it already (it hashes every byte)."""
    from safetensors.torch import load_file, save

    size = tuple(model.input_size)
    out: dict[str, torch.Tensor] = {}
    paths: dict[str, Path] = {}
    if cache is not False:
        from ..reference import cache_dir

        root = Path(cache or cache_dir()) / "tcav"
        fp = fingerprint or model_fingerprint(model)
        ik = key or images_key(images, size)
        for l in layers:
            key = hashlib.sha256(json.dumps([kind, fp, ik, l, pool, extra]).encode()).hexdigest()[:24]
            paths[l] = root / f"{kind}-{key}.safetensors"
            if paths[l].is_file():
                try:
                    out[l] = load_file(str(paths[l]))["values"]
                except Exception:  # unreadable cache file: recompute and overwrite
                    pass
    missing = [l for l in layers if l not in out]
    x = None
    if missing:
        x = load_images(images, model)
        new = compute(x, missing)
        for l in missing:
            out[l] = new[l]
            if l in paths:
                blob = save({"values": new[l].contiguous()})
                _atomic_write(paths[l], lambda f, b=blob: f.write(b))
    return out, x
