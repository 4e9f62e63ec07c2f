"""Objective specs for the command line: ``channel:LAYER:C``, ``neuron:LAYER:C[:X:Y]``,
``layer:LAYER``, ``logit:C`` (C an index or a class name)."""
from __future__ import annotations

from typing import Sequence

from fvis.errors import FvisError

from . import vision
from .base import Objective

FORMS = "channel:LAYER:C, neuron:LAYER:C[:X:Y], layer:LAYER, logit:C"


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FvisError(f"cannot parse objective {spec!r}: {what} must be an integer, got {text!r}") from None


def parse(spec: str, class_names: Sequence[str] | None = None) -> Objective:
    """Parse one SPEC into an objective; unparseable specs raise :class:`FvisError`."""
    kind, _, rest = spec.strip().partition(":")
    parts = rest.split(":")
    if kind == "logit" and rest:
        return vision.class_logit(rest, class_names)
    if kind == "channel" and len(parts) == 2 and parts[0]:
        return vision.channel(parts[0], _int(parts[1], "C", spec))
    if kind == "neuron" and len(parts) in (2, 4) and parts[0]:
        c = _int(parts[1], "C", spec)
        if len(parts) == 2:
            return vision.neuron(parts[0], c)
        return vision.neuron(parts[0], c, _int(parts[2], "X", spec), _int(parts[3], "Y", spec))
    if kind == "layer" and len(parts) == 1 and parts[0]:
        return vision.layer(parts[0])
    raise FvisError(f"cannot parse objective {spec!r}: expected one of {FORMS}")
