"""Activation atlases (Carter et al., Distill 2019): a layer's spatial activations over a folder
of images, laid out in 2-D, binned into a grid; the mean activation of every cell with enough
activations is rendered as a direction objective on that layer, all cells in one batched run
(chunked by ``batch_size``), and placed at its cell.

Which classes a cell's direction raises: the directional derivative of the logits when the
direction is added at every position of the layer's map, averaged over a few base images
(forward-mode autodiff: one forward per cell and base image, no backward)."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwad

import regularizers as reg
from objectives import Objective

from ..classes import resolve_class
from ..display import colorize
from ..engine import optimize
from ..errors import FvisError
from ..files import save_image, write_json
from ..hooks import frozen, grey_activations, resolve_layers
from ..inline import Displayable, Panel
from ..param import FourierImage
from ..policies import CaptureOptions
from .activations import FolderActivations, Images, folder_activations, view_images
from .embed import cell_means, check_method, embed, grid_cells


def directions_objective(layer: str, vectors: torch.Tensor, cossim_pow: float = 2.0) -> Objective:
    """Item ``i`` scores ``dot(a, v_i) * max(cos(a, v_i), 0.1) ** cossim_pow`` averaged over the
    positions of ``layer`` (``vectors`` ``(B, C)``): one objective for a whole batch of directions."""
    vectors = torch.as_tensor(vectors, dtype=torch.float32)

    def fn(acts):
        a = acts[layer]
        a = a.movedim(1, -1) if a.dim() == 4 else a[:, None, None, :]  # (rows, H, W, C)
        v = acts.rows(vectors.to(a.device, a.dtype)).repeat_interleave(acts.copies, 0)[:, None, None, :]
        dot = (a * v).sum(-1)
        if cossim_pow:
            cos = dot / (a.norm(dim=-1) * v.norm(dim=-1)).clamp_min(1e-8)
            dot = dot * cos.clamp_min(0.1) ** cossim_pow
        return dot.flatten(1).mean(1)

    def check(acts):
        a = acts[layer]
        if a.dim() < 2 or a.shape[1] != vectors.shape[1]:
            raise FvisError(f"directions have {vectors.shape[1]} entries but layer {layer!r} gives {tuple(a.shape[1:])}")
        if acts.total != len(vectors):
            raise FvisError(f"{len(vectors)} directions for a batch of {acts.total}")

    return Objective(fn, [layer], f"directions:{layer}", check)


def render_directions(model, layer: str, vectors: torch.Tensor, *, size: int = 96, steps: int = 256,
                      lr: float = 0.05, seed: int = 0, batch_size: int = 32, cossim_pow: float = 2.0,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Render each row of ``vectors`` ``(K, C)`` as a direction on ``layer``: ``ceil(K / batch_size)``
    batched runs of the engine. Returns images ``(K, C, size, size)``, final objective values
    ``(K,)`` and the seconds of the optimization steps."""
    device = next(model.parameters()).device
    images, values, seconds = [], [], 0.0
    for start in range(0, len(vectors), batch_size):
        chunk = vectors[start:start + batch_size]
        param = FourierImage((size, size), batch=len(chunk), channels=model.channels, seed=seed).to(device)
        result = optimize(model, directions_objective(layer, chunk, cossim_pow), param, [reg.TransformRobustness()],
                          steps=steps, lr=lr, seed=seed, progress=progress, policies=[CaptureOptions()])
        images.append(result.input)
        values.append(result.values)
        seconds += result.loop_seconds
    return torch.cat(images), torch.cat(values), seconds


def direction_logit_effects(model, layer: str, vectors: torch.Tensor, base: torch.Tensor,
                            batch_size: int = 16) -> torch.Tensor:
    """``(K, classes)``: how fast each logit grows when direction ``k`` is added at every position of
    ``layer``'s output, ``d logits(a + t v_k) / dt`` at ``t = 0``, averaged over the ``base`` images
    ``(M, C, H, W)``: exact, by forward-mode autodiff (one forward per direction and base image)."""
    module = resolve_layers(model, [layer])[layer]
    if module is None:
        raise FvisError("the class effects of a direction need an internal layer, not the model output")
    device = next(model.parameters()).device
    pairs = [(k, m) for k in range(len(vectors)) for m in range(len(base))]
    tangent: dict[str, torch.Tensor] = {}

    def hook(mod, inputs, output):
        t = tangent["v"].to(output.device, output.dtype)
        t = t.view(*t.shape, *([1] * (output.dim() - 2))).expand_as(output)
        return fwad.make_dual(output, t.contiguous(memory_format=torch.contiguous_format))

    sums = None
    with frozen(model), torch.no_grad(), fwad.dual_level():
        handle = module.register_forward_hook(hook)
        try:
            for s in range(0, len(pairs), batch_size):
                chunk = pairs[s:s + batch_size]
                tangent["v"] = vectors[[k for k, _ in chunk]].float()
                out = model(base[[m for _, m in chunk]].to(device))
                effect = fwad.unpack_dual(out).tangent
                if effect is None:
                    raise FvisError(f"the model output does not depend on layer {layer!r}")
                if sums is None:
                    sums = torch.zeros(len(vectors), effect.shape[1])
                sums.index_add_(0, torch.tensor([k for k, _ in chunk]), effect.float().cpu())
        finally:
            handle.remove()
    return sums / len(base)


@dataclass
class Atlas(Displayable):
    """An activation atlas: ``cells`` (one dict per rendered cell, see :func:`save_atlas`),
    their ``images`` ``(K, C, s, s)`` and ``directions`` ``(K, D)``, the ``counts`` of every grid
    cell ``(grid * grid,)``, the 2-D layout ``xy`` of all activations, and timings."""

    layer: str
    grid: int
    acts: FolderActivations
    xy: torch.Tensor
    counts: torch.Tensor
    cells: list[dict]
    directions: torch.Tensor
    images: torch.Tensor
    values: torch.Tensor
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def _panel(self) -> Panel:
        figures = {"layer": self.layer, "grid": f"{self.grid}x{self.grid}", "cells rendered": len(self.cells),
                   "activations": len(self.acts.values), **{f"seconds {k}": v for k, v in self.seconds.items() if isinstance(v, float)}}
        return Panel("activation atlas", [atlas_canvas(self), density_image(self)],
                     [f"atlas of {self.layer}", "density (activations per cell)"], figures, tile=320)


def check_spatial(model, layer: str) -> None:
    """One clear error before any long work when ``layer`` is unknown or gives no ``(C, H, W)`` map."""
    a = grey_activations(model, [layer])[layer]
    if a.dim() != 4:
        raise FvisError(f"layer {layer!r} has no spatial output (its output is {tuple(a.shape[1:])}, not channels "
                        f"x height x width); an atlas needs a convolutional layer")


def atlas(model, images: Images, layer: str, *, grid: int = 12, min_count: int = 3, steps: int = 256,
          size: int = 96, views: int = 16, positions: int = 16, method: str = "tsne", cls: int | str | None = None,
          class_top: int = 10, bases: int = 4, batch_size: int = 32, cossim_pow: float = 2.0, lr: float = 0.05,
          seed: int = 0, cache=None, progress: bool = False) -> Atlas:
    """Collect ``positions`` spatial activations of ``layer`` from each of ``views`` views (seeded
    crops/flips) of every image, lay them out in 2-D (``method``), bin into ``grid`` x ``grid``
    cells, and render the mean activation of every cell with at least ``min_count`` activations.
    ``cls``: keep only the cells whose direction has that class among the ``class_top`` classes it
    raises most (a class activation atlas)."""
    if grid < 1 or min_count < 1 or steps < 1 or size < 16 or bases < 1:
        raise FvisError("grid, min count, steps and bases must be at least 1, size at least 16")
    check_method(method)
    check_spatial(model, layer)
    target = None
    if cls is not None:
        target = resolve_class(cls, model.class_names)
    t0 = time.perf_counter()
    acts = folder_activations(model, images, layer, pool="spatial", views=views, positions=positions, seed=seed,
                              batch_size=batch_size, cache=cache, progress=progress)
    t1 = time.perf_counter()
    xy = embed(acts.values, method, seed)
    t2 = time.perf_counter()
    cell_of = grid_cells(xy, grid)
    means, counts = cell_means(acts.values, cell_of, grid)
    keep = (counts >= min_count).nonzero().flatten()
    if not len(keep):
        raise FvisError(f"no grid cell has {min_count} or more activations ({len(acts.values)} activations "
                        f"in a {grid}x{grid} grid); use a smaller --grid or --min-count, or more images/views")
    base = _base_images(images, acts, bases, tuple(model.input_size))
    effects = direction_logit_effects(model, layer, means[keep], base, batch_size)
    t3 = time.perf_counter()
    if target is not None:
        ranks = (effects > effects[:, target:target + 1]).sum(1)  # 0: the class the direction raises most
        sel = (ranks < class_top).nonzero().flatten()
        if not len(sel):
            raise FvisError(f"no cell's direction has class {target} ({_name(model, target)}) among the "
                            f"{class_top} classes it raises most; add images of that class")
        keep, effects = keep[sel], effects[sel]
    directions = means[keep]
    pics, values, render_seconds = render_directions(model, layer, directions, size=size, steps=steps, lr=lr,
                                                     seed=seed, batch_size=batch_size, cossim_pow=cossim_pow,
                                                     progress=progress)
    cells = []
    for j, c in enumerate(keep.tolist()):
        inside = (cell_of == c).nonzero().flatten()
        top = effects[j].topk(min(5, effects.shape[1]))
        files = Counter(acts.files[i] for i in acts.image[inside].tolist())
        cells.append({"cell": c, "row": c // grid, "column": c % grid, "count": int(counts[c]),
                      "x": round(float(xy[inside, 0].mean()), 5), "y": round(float(xy[inside, 1].mean()), 5),
                      "norm": round(float(directions[j].norm()), 5), "objective": round(float(values[j]), 5),
                      "classes": [{"class": int(i), "name": _name(model, int(i)), "effect": round(float(e), 5)}
                                  for e, i in zip(top.values, top.indices)],
                      **({"target_effect": round(float(effects[j, target]), 5)} if target is not None else {}),
                      "files": dict(files.most_common())})
    seconds = {"activations": round(t1 - t0, 3), "activations_cached": acts.cached, "embed": round(t2 - t1, 3),
               "class_effects": round(t3 - t2, 3), "render": round(render_seconds, 3),
               "render_per_cell": round(render_seconds / len(keep), 4)}
    settings = {"grid": grid, "min_count": min_count, "steps": steps, "size": size, "views": views,
                "positions": positions, "method": method, "class": target, "class_top": class_top, "bases": bases,
                "batch_size": batch_size, "cossim_pow": cossim_pow, "lr": lr, "seed": seed}
    return Atlas(layer, grid, acts, xy, counts, cells, directions, pics, values, seconds, settings)


def _name(model, i: int) -> str:
    names = model.class_names
    return names[i] if names and 0 <= i < len(names) else str(i)


def _base_images(images: Images, acts: FolderActivations, n: int, size) -> torch.Tensor:
    """The centre views of the first ``n`` readable images (where the class effects are measured)."""
    rows = [(acts.image == i).nonzero()[0, 0] for i in range(min(n, len(acts.files)))]
    return torch.stack(view_images(images, acts, size, rows, view=0))


def atlas_canvas(result: Atlas, background: float = 1.0) -> torch.Tensor:
    """``(C, grid * s, grid * s)``: each rendered cell at its grid place, empty cells blank."""
    c, s = result.images.shape[1], result.images.shape[-1]
    canvas = torch.full((c, result.grid * s, result.grid * s), background)
    for cell, im in zip(result.cells, result.images):
        r, q = cell["row"], cell["column"]
        canvas[:, r * s:(r + 1) * s, q * s:(q + 1) * s] = im
    return canvas


def density_image(result: Atlas, scale: int = 24) -> torch.Tensor:
    """``(3, grid * scale, grid * scale)``: activations per cell (log scale, inferno), cells below
    the minimum count dimmed."""
    counts = result.counts.view(result.grid, result.grid).float()
    heat = counts.log1p() / counts.log1p().max().clamp_min(1e-8)
    rgb = colorize(heat)
    low = (counts < result.settings.get("min_count", 1)) & (counts > 0)
    rgb = torch.where(low[None], rgb * 0.5, rgb)
    return rgb.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def save_atlas(result: Atlas, out: Path, model) -> list[Path]:
    """``atlas.png``, ``density.png`` and ``cells.json`` (per cell: grid place, count, layout
    coordinates, mean activation norm, objective, the classes its direction raises most with
    the logit effect, the files that contributed) in ``out``."""
    out = Path(out)
    paths = [save_image(atlas_canvas(result), out / "atlas.png"), save_image(density_image(result), out / "density.png")]
    paths.append(write_json({"model": model.name, "layer": result.layer, "grid": result.grid,
                             "images": result.acts.files, "skipped": result.acts.skipped,
                             "activations": len(result.acts.values), "map": list(result.acts.grid),
                             "settings": result.settings, "seconds": result.seconds, "cells": result.cells},
                            out / "cells.json"))
    return paths
