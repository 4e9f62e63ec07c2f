"""Classic inspection: filter weights, activation maps of an image, top-K dataset examples of a unit.
(Formerly ``fvis.inspect``, a name that shadowed the standard library; that path stays as a thin
re-export.)

All activations come from :class:`fvis.hooks.Capture` (only the named layer hooked, the forward
stopped right after it), in eval mode with frozen weights; the model is left as found.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import objectives

from .datasets import ImageFolder
from .display import colorize, normalize, overlay
from .errors import FvisError
from .files import contact_sheet, versions, write_json
from .hooks import capturing, named_layers, resolve_layers
from .progress import progress_bar


# --------------------------------------------------------------------------- filters
def first_conv(model: nn.Module) -> str:
    """Name of the first ``nn.Conv2d`` that reads the image (``in_channels`` = image channels)."""
    channels = getattr(model, "channels", 3)
    for name, m in named_layers(model).items():
        if isinstance(m, nn.Conv2d) and m.in_channels == channels:
            return name
    raise FvisError("no Conv2d layer reading the input image found: pass --layer")


def _weight(model: nn.Module, layer: str) -> torch.Tensor:
    module = resolve_layers(model, [layer])[layer]
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() not in (2, 4):
        kind = type(module).__name__ if module is not None else "model output"
        raise FvisError(f"layer {layer!r} ({kind}) has no convolution or linear weight to show")
    return w.detach().float().cpu()


def _tile_grid(tiles: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """``(N, C, h, w)`` -> one ``(C, H, W)`` grid image with ``pad`` px white gaps."""
    n, c, h, w = tiles.shape
    rows = math.ceil(n / columns)
    grid = torch.ones(c, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for i in range(n):
        y, x = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[:, y:y + h, x:x + w] = tiles[i]
    return grid


@dataclass
class FilterView:
    """``image`` ``(3, H, W)`` in [0, 1]; ``kind``: ``"rgb"`` (first layer: one colour tile per
    filter), ``"kernels"`` (spatial kernels, grey: rows = filters, columns = input channels;
    one column for depthwise convs), ``"matrix"`` (1x1 conv / linear: the out x in weight matrix);
    ``shape``: the weight shape. Values are scaled per filter so 0 is mid-grey."""

    layer: str
    kind: str
    shape: tuple
    image: torch.Tensor
    shown: int


def filter_view(model: nn.Module, layer: str | None = None, *, max_filters: int = 64, max_inputs: int = 16,
                zoom: int | None = None) -> FilterView:
    """Weights of ``layer`` (default: the first conv) as an image (see :class:`FilterView`)."""
    layer = layer or first_conv(model)
    w = _weight(model, layer)
    if w.dim() == 4 and w.shape[-1] * w.shape[-2] == 1:
        w = w.flatten(1)
    if w.dim() == 2:  # 1x1 conv or linear: the weight matrix, one pixel per weight (a few px when small)
        m = w / w.abs().amax(1, keepdim=True).clamp_min(1e-12)
        scale = max(1, min(zoom or 8, 512 // max(m.shape)))
        img = (0.5 + 0.5 * m)[None, None]
        img = F.interpolate(img, scale_factor=scale, mode="nearest")[0].expand(3, -1, -1)
        return FilterView(layer, "matrix", tuple(w.shape), img.contiguous(), w.shape[0])
    o, i, kh, kw = w.shape
    zoom = zoom or max(1, 48 // max(kh, kw))  # about 48 px per tile
    n = min(o, max_filters)
    w = w[:n] / w[:n].flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)  # per filter, 0 -> grey
    if i == getattr(model, "channels", 3) == 3:
        tiles = F.interpolate(0.5 + 0.5 * w, scale_factor=zoom, mode="nearest")
        return FilterView(layer, "rgb", (o, i, kh, kw), _tile_grid(tiles, math.ceil(math.sqrt(n))), n)
    cols = min(i, max_inputs)
    tiles = 0.5 + 0.5 * w[:, :cols].reshape(n * cols, 1, kh, kw)
    tiles = F.interpolate(tiles, scale_factor=zoom, mode="nearest").expand(-1, 3, -1, -1)
    columns = cols if cols > 1 else math.ceil(math.sqrt(n))
    return FilterView(layer, "kernels", (o, i, kh, kw), _tile_grid(tiles, columns), n)


# --------------------------------------------------------------------------- activation maps
@dataclass
class ActivationMaps:
    """The ``top`` channels of ``layer`` for one image, by mean activation: ``channels`` ``(K,)``,
    ``means`` ``(K,)``, ``maps`` ``(K, h, w)``; ``all_means`` ``(C,)`` for every channel."""

    layer: str
    channels: torch.Tensor
    means: torch.Tensor
    maps: torch.Tensor
    all_means: torch.Tensor


def _spatial(act: torch.Tensor, layer: str) -> torch.Tensor:
    if act.dim() != 4:
        raise FvisError(f"layer {layer!r} gives {tuple(act.shape)}: activation maps need a layer with "
                        f"spatial output (B, C, H, W)")
    return act


def activation_maps(model: nn.Module, image: torch.Tensor, layer: str, top: int = 16) -> ActivationMaps:
    """Activation maps of ``layer`` for ``image`` ``(C, H, W)`` in [0, 1]; the ``top`` channels."""
    x = (image[None] if image.dim() == 3 else image[:1]).float().to(_device(model))
    with capturing(model, [layer]) as cap:
        act = _spatial(cap.plan(x)[layer], layer)[0].float().cpu()  # one truncated forward
    means = act.mean((1, 2))
    k = min(top, act.shape[0])
    order = means.topk(k).indices
    return ActivationMaps(layer, order, means[order], act[order], means)


def activation_sheet(maps: ActivationMaps, image: torch.Tensor, path: str | Path) -> Path:
    """Contact sheet: the image, then each top channel's map (inferno, scaled to its own max)."""
    heat = normalize(maps.maps.clamp_min(0), None)
    tiles = [image.cpu()] + [colorize(h) for h in heat]
    labels = [f"{maps.layer}"] + [f"ch {int(c)} mean {float(m):.3g}" for c, m in zip(maps.channels, maps.means)]
    return contact_sheet(tiles, labels, path, columns=min(len(tiles), 6), tile=160)


# --------------------------------------------------------------------------- top-k dataset examples
@dataclass
class TopK:
    """The ``k`` images of a folder that drive a unit most. ``entries``: dicts with ``path``,
    ``score`` (the channel's mean activation, or the neuron's), ``image`` ``(C, H, W)`` and
    ``heatmap`` ``(h, w)`` (the channel's activation map), best first. ``read`` / ``skipped``:
    how many images were used, and ``(path, reason)`` of each unreadable one."""

    objective: str
    layer: str
    channel: int
    entries: list[dict]
    read: int
    skipped: list = field(default_factory=list)


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def top_k(model: nn.Module, images: str | Path, layer: str, channel: int, *, k: int = 9, x: int | None = None,
          y: int | None = None, size=None, batch_size: int = 16, progress: bool = True) -> TopK:
    """Top-``k`` images under folder ``images`` for ``channel`` of ``layer`` (mean over positions),
    or for one neuron when ``x``/``y`` are given (as ``objectives.neuron``). Unreadable files are
    skipped with a warning and counted; the run goes on."""
    if k < 1:
        raise FvisError(f"k must be >= 1, got {k}")
    unit = objectives.neuron(layer, channel, x, y) if (x is not None or y is not None) else objectives.channel(layer, channel)
    folder = ImageFolder(images, size or getattr(model, "input_size", 224), batch_size, getattr(model, "channels", 3))
    best: list[tuple[float, int, Path, torch.Tensor, torch.Tensor | None]] = []
    order = 0
    device = _device(model)
    h, w = (folder.size, folder.size) if isinstance(folder.size, int) else folder.size
    with torch.inference_mode(), capturing(model, unit.layers) as cap:
        # a dry forward of a grey image validates layer and channel and enables truncation, before any bar
        unit.check(cap.plan(torch.full((1, folder.channels, h, w), 0.5, device=device)))
        bar = progress_bar(total=len(folder), show=progress, desc="top-k", unit="img")
        for paths, batch in folder:
            batch = batch.to(device)
            acts = cap.forward(batch)
            scores = unit(acts).float().cpu()
            act = acts[layer]
            maps = act[:, channel].float().cpu() if act.dim() == 4 else None
            for j, (p, s) in enumerate(zip(paths, scores.tolist())):
                best.append((s, order, p, batch[j].cpu(), None if maps is None else maps[j]))
                order += 1
            best = sorted(best, key=lambda e: (-e[0], e[1]))[:k]
            bar.update(len(paths))
        bar.close()
    if order == 0:
        raise FvisError(f"no readable images in {images} ({folder.summary()})")
    entries = [{"path": p, "score": s, "image": img, "heatmap": m} for s, _, p, img, m in best]
    return TopK(unit.name, layer, channel, entries, folder.read, list(folder.skipped))


def save_top_k(result: TopK, out: str | Path) -> list[Path]:
    """``topk.png`` (the images), ``topk_heatmaps.png`` (activation maps over them) and ``topk.json``."""
    out = Path(out)
    labels = [f"#{i + 1} {float(e['score']):.3g} {Path(e['path']).name}" for i, e in enumerate(result.entries)]
    columns = min(len(labels), 5)
    written = [contact_sheet([e["image"] for e in result.entries], labels, out / "topk.png", columns=columns, tile=160)]
    if all(e["heatmap"] is not None for e in result.entries):
        peak = max(float(e["heatmap"].clamp_min(0).max()) for e in result.entries) or 1.0  # one scale for all
        overs = [overlay(e["image"], (e["heatmap"].clamp_min(0) / peak)) for e in result.entries]
        written.append(contact_sheet(overs, labels, out / "topk_heatmaps.png", columns=columns, tile=160))
    write_json({"objective": result.objective, "layer": result.layer, "channel": result.channel,
                "read": result.read, "skipped": [{"path": str(p), "reason": r} for p, r in result.skipped],
                "top": [{"rank": i + 1, "path": str(e["path"]), "score": e["score"]} for i, e in enumerate(result.entries)],
                "versions": versions()}, out / "topk.json")
    return written + [out / "topk.json"]


# --------------------------------------------------------------------------- command line
