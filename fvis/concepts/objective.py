"""Saved CAVs and direction files as render objectives from the command line:
``cav:FILE[:CONCEPT[@LAYER]]``, ``direction:LAYER:FILE[:CONCEPT]``, and a class objective pushed
toward or away from a concept.

``objectives.parse`` knows only the core's objectives (the ``objectives`` package may not import
``fvis.concepts``), so ``fvis render`` resolves ``cav:`` specs here and everything else there.

* ``cav:tcav-zebra/cavs.safetensors`` — the file's only concept (several: name one);
* ``cav:tcav-zebra/:stripes`` — a folder means its ``cavs.safetensors``;
* ``cav:cavs.safetensors:stripes@_blocks.8`` — one concept at one layer;
* ``cav:cavs.safetensors:random@_blocks.8`` — the random-vs-random CAVs render too (a baseline);
* ``direction:_blocks.8:cavs.safetensors[:stripes]`` — the same CAV named layer first;
* ``direction:_blocks.8:v.npy`` (or ``.pt``/``.pth``, or a ``.safetensors`` holding one tensor) —
  any saved vector of the layer's channel count, rendered with :func:`objectives.direction`.

The objective is the layer's activation projected on the unit mean CAV of the concept's runs
(:func:`fvis.concepts.cav_objective`): ``pool="flatten"`` CAVs score the whole map (render at the
model's input size), ``pool="mean"`` CAVs are channel directions (any size).

Toward / away (:func:`steer`): ``objective + w * cav`` or ``objective - w * cav``. ``w`` is in the
layer's activation units (on Lite0 at ``_blocks.8`` a stripes render reaches a projection of ~48,
the espresso logit ~48: ``w`` of 0.5-1 balances them); the render command prints both terms'
final values so a user sees which one dominated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from objectives import direction

from ..errors import FvisError
from .cavfile import META_KEY, cav_objective, load_cavs

PREFIX = "cav:"
FORM = "cav:FILE[:CONCEPT[@LAYER]]"
DIRECTION_PREFIX = "direction:"
DIRECTION_FORM = "direction:LAYER:FILE[:CONCEPT]"


def is_cav_spec(spec: str) -> bool:
    """A spec this module resolves (``cav:...`` or ``direction:...``) rather than ``objectives.parse``."""
    return spec.strip().startswith((PREFIX, DIRECTION_PREFIX))


def split_cav_spec(spec: str) -> tuple[Path, str | None, str | None]:
    """``(file, concept or None, layer or None)`` of ``cav:FILE[:CONCEPT[@LAYER]]``; the file may
    itself contain ``:`` (an existing path is taken whole)."""
    rest = spec.strip()[len(PREFIX):]
    if not rest:
        raise FvisError(f"cannot parse objective {spec!r}: expected {FORM}")
    if Path(rest).exists() or ":" not in rest:
        return Path(rest), None, None
    file, _, sel = rest.rpartition(":")
    concept, _, layer = sel.partition("@")
    if not file or not concept:
        raise FvisError(f"cannot parse objective {spec!r}: expected {FORM}")
    return Path(file), concept, layer or None


def split_direction_spec(spec: str) -> tuple[str, Path, str | None]:
    """``(layer, file, concept or None)`` of ``direction:LAYER:FILE[:CONCEPT]`` (an existing path is
    taken whole, so a file name may contain ``:``)."""
    layer, _, rest = spec.strip()[len(DIRECTION_PREFIX):].partition(":")
    if not layer or not rest:
        raise FvisError(f"cannot parse objective {spec!r}: expected {DIRECTION_FORM}")
    if Path(rest).exists() or ":" not in rest:
        return layer, Path(rest), None
    file, _, concept = rest.rpartition(":")
    return layer, Path(file), concept or None


def _is_cav_file(path: Path) -> bool:
    if path.is_dir():
        return (path / "cavs.safetensors").is_file()
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return META_KEY in (f.metadata() or {})
    except Exception:  # safetensors' own errors derive from Exception only
        return False


def load_vector(path: Path) -> torch.Tensor:
    """One saved vector: ``.npy``, ``.pt``/``.pth`` (a tensor), or ``.safetensors`` with one tensor."""
    if not path.is_file():
        raise FvisError(f"direction file not found: {path}")
    try:
        if path.suffix == ".npy":
            v = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix in (".pt", ".pth"):
            v = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                keys = list(f.keys())
                if len(keys) != 1:
                    raise FvisError(f"{path} holds {len(keys)} tensors ({', '.join(keys[:5])}); a direction file holds one")
                v = f.get_tensor(keys[0])
        else:
            raise FvisError(f"{path}: a direction file is .npy, .pt, .pth or .safetensors")
    except FvisError:
        raise
    except Exception as e:
        raise FvisError(f"cannot read a direction from {path} ({type(e).__name__}: {e})") from None
    if not isinstance(v, torch.Tensor) or v.squeeze().dim() != 1:
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise FvisError(f"{path}: a direction is one vector, got {shape}")
    return v.squeeze().float()


def parse_cav(spec: str, cossim_pow: float = 0.0):
    """The render objective of a ``cav:`` or ``direction:LAYER:FILE`` spec (a bad file or an unknown
    concept: :class:`FvisError`)."""
    if spec.strip().startswith(DIRECTION_PREFIX):
        layer, file, concept = split_direction_spec(spec)
        if not _is_cav_file(file):
            if concept is not None:
                raise FvisError(f"{spec!r}: {file} is not an fvis CAV file, so it has no concept {concept!r}")
            obj = direction(layer, load_vector(file), cossim_pow)
            obj.name = f"direction:{layer}:{file.name}"
            return obj
        cs = load_cavs(file)
        if concept is None:
            names = list(dict.fromkeys(e["concept"] for e in cs.entries if not e["random"] and e["layer"] == layer))
            if len(names) != 1:
                have = ", ".join(f"{e['concept']}@{e['layer']}" for e in cs.entries if not e["random"])
                raise FvisError(f"{spec!r}: {'several CAVs' if names else 'no CAV'} at {layer} in the file "
                                f"({have}); name one: {DIRECTION_PREFIX}{layer}:{file}:CONCEPT")
            concept = names[0]
        return cav_objective(cs, concept, layer, cossim_pow)
    file, concept, layer = split_cav_spec(spec)
    cs = load_cavs(file)
    if concept is None:
        names = list(dict.fromkeys(e["concept"] for e in cs.entries if not e["random"]))
        layers = list(dict.fromkeys(e["layer"] for e in cs.entries if not e["random"]))
        if len(names) != 1 or len(layers) != 1:
            have = ", ".join(f"{e['concept']}@{e['layer']}" for e in cs.entries if not e["random"])
            raise FvisError(f"{spec!r}: the file has several CAVs ({have}); name one: {PREFIX}{file}:CONCEPT[@LAYER]")
        concept = names[0]
    return cav_objective(cs, concept, layer, cossim_pow)


def steer(objective, cav, weight: float, away: bool = False):
    """``objective + weight * cav`` (toward the concept) or ``objective - weight * cav`` (away)."""
    if weight < 0:
        raise FvisError(f"the concept weight must be >= 0 (use away for the other direction), got {weight}")
    return objective - weight * cav if away else objective + weight * cav
