"""``attack(model, images, method=..., **options)``: every attack by its ``fvis attack --method`` name."""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import FvisError, suggest
from ..models import ImageModel
from .apgd import apgd
from .base import AttackResult
from .cw import cw
from .pgd import pgd
from .square import square


METHODS = ("pgd", "mifgsm", "adam", "apgd", "apgd-t", "square", "cw")


def attack(model: ImageModel, images: torch.Tensor, *, method: str = "pgd", **options) -> AttackResult:
    """Run the attack named ``method`` (:data:`METHODS`) with its own keyword ``options``.

    ``apgd-t`` is :func:`apgd` with ``targets=9`` (AutoAttack's) unless given; ``apgd`` and
    ``apgd-t`` default to the DLR loss for ``apgd-t`` and CE for ``apgd``.
    """
    if method in ("pgd", "mifgsm", "adam"):
        return pgd(model, images, method=method, **options)
    if method in ("apgd", "apgd-t"):
        if method == "apgd-t":
            options.setdefault("targets", 9)
            options.pop("loss", None)
        return apgd(model, images, **options)
    if method == "square":
        return square(model, images, **options)
    if method == "cw":
        return cw(model, images, **options)
    raise FvisError(f"unknown attack method {method!r}: choose from {', '.join(METHODS)}.{suggest(method, METHODS)}")


def get(method: str) -> Callable[..., AttackResult]:
    """``attack`` with ``method`` bound."""
    return lambda model, images, **options: attack(model, images, method=method, **options)
