"""Natural activation statistics from a folder of reference images, cached on disk (safetensors).

For each layer: per-channel population ``mean`` and ``std`` over every position of every image,
``target_std`` (the average within-image spread relative to ``std``), and the mean pooled
activation of each class present (files named ``<class index>_<anything>``; other names count
toward the statistics but not toward a class). A second call with the same model, layers, size
and files (names, sizes, modification times) reads the cache instead of running the model.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save

from regularizers.distribution import interpolate_quantiles, sorted_values


from .datasets import ImageFolder
from .errors import FvisError
from .files import atomic_write as _atomic_write
from .hooks import Capture, frozen
from .progress import progress_bar

_CLASS_FILE = re.compile(r"^(\d+)_")


def cache_dir() -> Path:
    """``$FVIS_CACHE`` or ``~/.cache/fvis``."""
    return Path(os.environ.get("FVIS_CACHE", Path.home() / ".cache" / "fvis"))


def _key(model, layers: Sequence[str], files: Sequence[Path], size) -> str:
    h = hashlib.sha256(json.dumps([getattr(model, "name", type(model).__name__), list(layers), list(size)]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def reference_stats(model, folder: str | Path, layers: Sequence[str], *, size=None, batch_size: int = 16,
                    cache: str | Path | None | bool = None, progress: bool = False) -> dict:
    """Statistics of ``layers`` on the images in ``folder``:
    ``{"stats": {layer: {"mean", "std", "target_std"}}, "class_means": {layer: (K, C)},
    "classes": (K,) class indices, "images": N, "cached": bool}``.
    ``cache``: folder for the safetensors file (default :func:`cache_dir`; ``False``: no cache)."""

    size = tuple(size or model.input_size)
    data = ImageFolder(folder, size, batch_size, channels=getattr(model, "channels", 3))
    layers = list(layers)
    path = None
    if cache is not False:
        path = Path(cache or cache_dir()) / "stats" / f"{_key(model, layers, data.files, size)}.safetensors"
        if path.is_file():
            try:
                return _unpack(load_file(str(path)), layers) | {"cached": True}
            except Exception:  # unreadable cache: recompute and overwrite
                pass
    device = next(model.parameters()).device
    n = 0
    sums = {l: None for l in layers}
    class_sums: dict[int, dict[str, torch.Tensor]] = {}
    class_counts: dict[int, int] = {}
    with frozen(model), Capture(model, layers) as cap, torch.no_grad():
        batches = iter(data)
        if progress:
            batches = progress_bar(batches, total=-(-len(data) // batch_size), desc="reference statistics")
        for paths, images in batches:
            acts = cap.forward(images.to(device))
            classes = [int(m.group(1)) if (m := _CLASS_FILE.match(p.name)) else -1 for p in paths]
            for l in layers:
                a = acts[l].float()
                flat = a.flatten(2) if a.dim() > 2 else a.unsqueeze(-1)
                mu, m2, sd = flat.mean(-1), flat.pow(2).mean(-1), flat.std(-1, unbiased=False)
                part = torch.stack([mu.sum(0), m2.sum(0), sd.sum(0)]).cpu()
                sums[l] = part if sums[l] is None else sums[l] + part
                for c, v in zip(classes, mu.cpu()):
                    if c >= 0:
                        cs = class_sums.setdefault(c, {})
                        cs[l] = cs.get(l, 0) + v
            for c in classes:
                if c >= 0:
                    class_counts[c] = class_counts.get(c, 0) + 1
            n += len(paths)
    if n == 0:
        raise FvisError(f"no readable images in {folder}")
    tensors = {}
    ks = sorted(class_sums)
    tensors["classes"] = torch.tensor(ks, dtype=torch.long)
    for l in layers:
        mu, m2, sd = sums[l] / n
        std = (m2 - mu ** 2).clamp_min(1e-10).sqrt()
        tensors[f"{l}/mean"], tensors[f"{l}/std"], tensors[f"{l}/target_std"] = mu, std, sd / std
        if ks:
            tensors[f"{l}/class_means"] = torch.stack([class_sums[c][l] / class_counts[c] for c in ks])
    tensors["images"] = torch.tensor(n)
    if path is not None:
        blob = {k: v.contiguous() for k, v in tensors.items()}
        _atomic_write(path, lambda f: f.write(save(blob)))
    return _unpack(tensors, layers) | {"cached": False}


def _unpack(t: dict, layers: Sequence[str]) -> dict:
    stats = {l: {k: t[f"{l}/{k}"] for k in ("mean", "std", "target_std")} for l in layers}
    class_means = {l: t[f"{l}/class_means"] for l in layers if f"{l}/class_means" in t}
    return {"stats": stats, "class_means": class_means, "classes": t["classes"], "images": int(t["images"])}


@torch.no_grad()
def activation_quantiles(model, images: torch.Tensor, layers: Sequence[str], levels: int = 256,
                         max_positions: int = 1024, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``{layer: (C, levels)}``: per-channel quantiles of ``layers``' activations over every
    (subsampled) position of every image in ``images`` ``(N, C, H, W)`` in [0, 1], at the
    mid-point levels of :func:`regularizers.distribution.quantile_levels` (for sorted matching)."""

    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {l: [] for l in layers}
    with frozen(model), Capture(model, layers) as cap:
        for i in range(0, len(images), batch_size):
            acts = cap.forward(images[i:i + batch_size].to(device))
            for l in layers:  # (1, C, n) per batch: every item and position of the chunk
                parts[l].append(sorted_values(acts[l].float(), max_positions, "batch", acts.batch)[0].cpu())
    return {l: interpolate_quantiles(torch.cat(p, 1).sort(1).values, levels) for l, p in parts.items()}


def folder_quantiles(model, folder: str | Path, layers: Sequence[str], *, size=None, levels: int = 256,
                     batch_size: int = 16) -> dict[str, torch.Tensor]:
    """:func:`activation_quantiles` of the readable images in ``folder`` (resized, centre-cropped)."""
    size = tuple(size or model.input_size)
    data = ImageFolder(folder, size, batch_size, channels=getattr(model, "channels", 3))
    images = torch.cat([x for _, x in data]) if len(data) else None
    if images is None or not len(images):
        raise FvisError(f"no readable images in {folder}")
    return activation_quantiles(model, images, layers, levels, batch_size=batch_size)
