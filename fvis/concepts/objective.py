"""Saved CAVs as render objectives from the command line: ``cav:FILE[:CONCEPT[@LAYER]]``, and a
class objective pushed toward or away from a concept.

``objectives.parse`` knows only the core's objectives (the ``objectives`` package may not import
``fvis.concepts``), so ``fvis render`` resolves ``cav:`` specs here and everything else there.

* ``cav:tcav-zebra/cavs.safetensors`` — the file's only concept (several: name one);
* ``cav:tcav-zebra/:stripes`` — a folder means its ``cavs.safetensors``;
* ``cav:cavs.safetensors:stripes@_blocks.8`` — one concept at one layer;
* ``cav:cavs.safetensors:random@_blocks.8`` — the random-vs-random CAVs render too (a baseline).

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

from ..errors import FvisError
from .cavfile import cav_objective, load_cavs

PREFIX = "cav:"
FORM = "cav:FILE[:CONCEPT[@LAYER]]"


def is_cav_spec(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


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


def parse_cav(spec: str, cossim_pow: float = 0.0):
    """The render objective of a ``cav:`` spec (a bad file or an unknown concept: :class:`FvisError`)."""
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
