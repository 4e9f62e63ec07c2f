"""Activations of a layer for a folder (or tensor) of images, computed once and cached.

Two entry points share one cache (safetensors under ``$FVIS_CACHE``, keyed by the model's
weights, the layer and settings, and the images: file names, sizes and times for a folder, as in
:mod:`fvis.reference`; the bytes for a tensor):

* :func:`compute_activations` / :func:`cached`: ``{layer: (N, D)}`` of already-loaded images
  (``pool``: ``"flatten"`` the whole map, ``"mean"`` the per-channel spatial mean), used by TCAV
  (:mod:`fvis.concepts` re-exports them from here).
* :func:`folder_activations`: one layer for every image of a folder, with extra seeded random
  crops/flips per image to multiply a small folder (``views``), either pooled (spatial mean, one
  row per view) or spatial (``positions`` random positions of the map per view, one row each),
  batched, with the logits per view when asked; unreadable files are skipped and counted.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torchvision.transforms.v2 import functional as F

from ..datasets import ImageFolder, read_images, warn_skipped
from ..errors import FvisError
from ..files import atomic_write, list_images, load_image
from ..hooks import OUTPUT, Capture, frozen
from ..progress import progress_bar
from ..reference import cache_dir

POOLS = ("flatten", "mean")
FOLDER_POOLS = ("mean", "spatial")
Images = Union[torch.Tensor, str, Path]
CPU_BATCH, DEVICE_BATCH = 4, 32  # images per forward: on one CPU thread batches of 4 ran ~1.5x faster than 32


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
        for f in list_images(images):
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_images(images: Images, model, what: str = "images") -> torch.Tensor:
    """A folder (resized, centre-cropped to the model's input size) or an ``(N, 3, H, W)`` tensor in [0, 1]."""
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


def batch_for(model, batch_size: int | None) -> int:
    """``batch_size`` or the default for the model's device (small batches stay in the CPU's caches)."""
    return batch_size or (CPU_BATCH if _device(model).type == "cpu" else DEVICE_BATCH)


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _represent(t: torch.Tensor, pool: str, grad: bool = False) -> torch.Tensor:
    t = t.float()
    if pool == "mean" and t.dim() > 2:
        return t.flatten(2).sum(-1) if grad else t.flatten(2).mean(-1)
    return t.flatten(1)


@torch.inference_mode()
def compute_activations(model, images: torch.Tensor, layers: Sequence[str], pool: str = "flatten",
                        batch_size: int | None = None, fold: bool = True) -> dict[str, torch.Tensor]:
    """``{layer: (N, D)}`` float32 on the CPU: one truncated forward per image for all layers
    (channels-last input on the CPU, as :meth:`fvis.hooks.Capture.plan` decides). ``fold``: run a
    checked inference copy of the model (BatchNorm and padding folded into convolutions,
    activations in place: :func:`fvis.hooks.inference_copy`) when there are more images than one batch."""
    device = _device(model)
    batch_size = batch_for(model, batch_size)
    parts: dict[str, list] = {l: [] for l in layers}
    with frozen(model), Capture(model, layers, fold=fold and len(images) > batch_size) as cap:
        cap.plan(images[:1].to(device))
        for i in range(0, len(images), batch_size):
            acts = cap.forward(images[i:i + batch_size].to(device))
            for l in layers:
                parts[l].append(_represent(acts[l], pool).cpu())
    return {l: torch.cat(p) for l, p in parts.items()}


def _cache_path(kind: str, parts: list, cache) -> Path | None:
    if cache is False:
        return None
    key = hashlib.sha256(json.dumps([kind, *parts]).encode()).hexdigest()[:24]
    return Path(cache or cache_dir()) / "tcav" / f"{kind}-{key}.safetensors"


def cached(kind: str, model, images: Images, layers: Sequence[str], pool: str, cache, compute,
           extra: str = "", fingerprint: str | None = None,
           key: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Per-layer cache around ``compute(images_tensor, missing_layers) -> {layer: (N, D)}``.
    Returns the activations and the loaded image tensor (``None`` if everything came from the cache).
    ``key``: the images' :func:`images_key`, when the caller has it already (it hashes every byte)."""
    out: dict[str, torch.Tensor] = {}
    paths: dict[str, Path] = {}
    if cache is not False:
        fp = fingerprint or model_fingerprint(model)
        ik = key or images_key(images, tuple(model.input_size))
        for l in layers:
            paths[l] = _cache_path(kind, [fp, ik, l, pool, extra], cache)
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
                atomic_write(paths[l], lambda f, b=blob: f.write(b))
    return out, x


# --------------------------------------------------------------------------- a folder, one layer

@dataclass
class FolderActivations:
    """One layer's activations over every view of every readable image.

    ``values`` ``(N, C)``: one row per view (``pool="mean"``) or per sampled map position
    (``"spatial"``). ``image`` ``(N,)``: index into ``files``; ``view`` ``(N,)``: the view of that
    image (0: the image resized and centre-cropped; ``1..views-1``: seeded random crops, half of
    them mirrored); ``position`` ``(N, 2)``: ``(row, column)`` in the ``grid``-sized map (``-1``
    when pooled). ``logits`` ``(images * views, K)`` per view (image-major) when asked, else
    ``None``. ``skipped``: unreadable files (name: reason)."""

    layer: str
    pool: str
    values: torch.Tensor
    image: torch.Tensor
    view: torch.Tensor
    position: torch.Tensor
    files: list[str]
    views: int
    grid: tuple[int, int]
    logits: torch.Tensor | None = None
    skipped: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0
    seed: int = 0

    def summary(self) -> str:
        text = f"read {len(self.files)} images"
        if self.skipped:
            names = ", ".join(s.split(":")[0] for s in self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
            text += f"; skipped {len(self.skipped)} unreadable ({names})"
        return text + f"; {self.views} view(s) each, {len(self.values)} activation vectors of {self.layer}"


def _sources(images: Images, channels: int) -> tuple[list[str], list[torch.Tensor], list[str]]:
    """Names, full-size ``(C, H, W)`` images and skipped ``"name: reason"`` entries."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != channels:
            raise FvisError(f"images: expected a tensor (N, {channels}, H, W) in [0, 1], got {tuple(images.shape)}")
        return [f"#{i}" for i in range(len(images))], list(images.detach().float().cpu()), []
    paths = list_images(images)  # FvisError when missing or empty
    kept, ims, unread = read_images(paths, None, channels)  # the folder rule: skipped, counted, one warning
    warn_skipped(unread)
    names = [paths[i].name for i in kept]
    skipped = [f"{p.name}: {reason}" for p, reason in unread]
    if not ims:
        raise FvisError(f"no readable images in {images} ({len(skipped)} unreadable)")
    return names, ims, skipped


def view_of(image: torch.Tensor, size: tuple[int, int], view: int, seed: int, index: int,
            min_scale: float = 0.25) -> torch.Tensor:
    """View ``view`` of ``image``: 0 is the resized centre crop; others are a random square crop
    covering ``min_scale``..1 of the short side's square (seeded by ``seed``, ``index``, ``view``),
    mirrored for odd views, resized to ``size``."""
    h, w = image.shape[-2:]
    if view == 0:
        return F.center_crop(F.resize(image, [min(size)], antialias=True), list(size)).clamp(0, 1)
    g = torch.Generator().manual_seed(_seed(seed, index, view))
    scale = min_scale + (1 - min_scale) * float(torch.rand((), generator=g))
    side = max(1, int(round(min(h, w) * scale ** 0.5)))
    top = int(torch.randint(0, h - side + 1, (), generator=g))
    left = int(torch.randint(0, w - side + 1, (), generator=g))
    crop = F.resized_crop(image, top, left, side, side, list(size), antialias=True).clamp(0, 1)
    return crop.flip(-1) if view % 2 else crop


def view_images(images: Images, acts: FolderActivations, size: tuple[int, int], rows,
                view: int | None = None, channels: int = 3) -> list[torch.Tensor]:
    """The pixels of the views behind ``rows`` of ``acts`` as the activations saw them (at ``size``;
    ``view``: that view of the same image instead)."""
    sources: dict[int, torch.Tensor] = {}
    out = []
    for r in rows:
        i, v = int(acts.image[r]), int(acts.view[r]) if view is None else view
        if i not in sources:
            sources[i] = images[i].float() if isinstance(images, torch.Tensor) else \
                load_image(Path(images) / acts.files[i], None, channels)
        out.append(view_of(sources[i], size, v, acts.seed, i))
    return out


def folder_activations(model, images: Images, layer: str, *, pool: str = "mean", views: int = 1,
                       positions: int = 16, logits: bool = False, batch_size: int = 16, seed: int = 0,
                       cache: str | Path | None | bool = None, progress: bool = False) -> FolderActivations:
    """``layer``'s activations for every readable image of ``images`` (a folder or an
    ``(N, C, H, W)`` tensor in [0, 1]) and ``views - 1`` extra seeded crops/flips of each.
    ``pool="mean"``: the spatial mean, one row per view; ``"spatial"``: ``positions`` random
    positions of the map per view (all of them when the map is smaller), one row each; the layer
    must give a ``(C, H, W)`` map. ``logits``: also keep the model output per view.
    ``cache``: folder (default ``$FVIS_CACHE``), or ``False`` for none."""
    if pool not in FOLDER_POOLS:
        raise FvisError(f"unknown pooling {pool!r}: choose from {', '.join(FOLDER_POOLS)}")
    if views < 1 or positions < 1 or batch_size < 1:
        raise FvisError("views, positions and batch size must be at least 1")
    start = time.perf_counter()
    size = tuple(model.input_size)
    channels = getattr(model, "channels", 3)
    layers = [layer] + ([OUTPUT] if logits else [])
    with Capture(model, layers):  # unknown layer: one clear error (with suggestions) before any reading
        pass
    settings = [layer, pool, views, positions if pool == "spatial" else 0, bool(logits), seed, list(size)]
    path = _cache_path("folder", [model_fingerprint(model), images_key(images, size), *settings], cache)
    if path is not None and path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["fvis"])
            t = load_file(str(path))
            return FolderActivations(layer, pool, t["values"], t["image"], t["view"], t["position"], meta["files"],
                                     views, tuple(meta["grid"]), t.get("logits"), meta["skipped"], True,
                                     time.perf_counter() - start, seed)
        except Exception:  # unreadable cache file: recompute and overwrite
            pass
    names, sources, skipped = _sources(images, channels)
    device = _device(model)
    jobs = [(i, v) for i in range(len(sources)) for v in range(views)]
    vals, img_idx, view_idx, pos, outs, grid = [], [], [], [], [], None
    batches = progress_bar(range(0, len(jobs), batch_size), show=progress, desc=f"activations of {layer}")
    with frozen(model), Capture(model, layers, truncate=not logits) as cap, torch.no_grad():
        planned = False
        for b in batches:
            chunk = jobs[b:b + batch_size]
            x = torch.stack([view_of(sources[i], size, v, seed, i) for i, v in chunk]).to(device)
            if not planned:
                cap.plan(x[:1])
                planned = True
            acts = cap.forward(x)
            a = acts[layer].float()
            if pool == "spatial" and a.dim() != 4:
                raise FvisError(f"layer {layer!r} has no spatial output (its output is {tuple(a.shape[1:])}, "
                                f"not channels x height x width); pick an earlier layer")
            if logits:
                outs.append(acts[OUTPUT].float().cpu())
            if pool == "mean" or a.dim() < 3:
                vals.append(_represent(a, "mean").cpu())
                img_idx += [i for i, _ in chunk]
                view_idx += [v for _, v in chunk]
                pos += [(-1, -1)] * len(chunk)
                grid = tuple(a.shape[2:4]) if a.dim() == 4 else (1, 1)
                continue
            grid = tuple(a.shape[2:])
            hw = grid[0] * grid[1]
            flat = a.flatten(2).cpu()  # (B, C, HW)
            for row, (i, v) in enumerate(chunk):
                g = torch.Generator().manual_seed(_seed(seed, i, v, -1))
                keep = torch.randperm(hw, generator=g)[:positions].sort().values
                vals.append(flat[row][:, keep].T)
                img_idx += [i] * len(keep)
                view_idx += [v] * len(keep)
                pos += [(int(k) // grid[1], int(k) % grid[1]) for k in keep]
    tensors = {"values": torch.cat(vals).contiguous(), "image": torch.tensor(img_idx),
               "view": torch.tensor(view_idx), "position": torch.tensor(pos, dtype=torch.long).view(-1, 2)}
    if logits:
        tensors["logits"] = torch.cat(outs).contiguous()
    if path is not None:
        meta = {"files": names, "skipped": skipped, "grid": list(grid)}
        blob = save(tensors, metadata={"fvis": json.dumps(meta)})
        atomic_write(path, lambda f: f.write(blob))
    return FolderActivations(layer, pool, tensors["values"], tensors["image"], tensors["view"], tensors["position"],
                             names, views, grid, tensors.get("logits"), skipped, False, time.perf_counter() - start, seed)


def _seed(*numbers: int) -> int:
    """A generator seed from integers, the same in every process (unlike ``hash`` of mixed tuples)."""
    return int.from_bytes(hashlib.sha256(json.dumps(numbers).encode()).digest()[:7], "little")
