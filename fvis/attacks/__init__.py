"""Adversarial attacks, one per module, one call shape (torchattacks style), all on
:func:`fvis.optimize` and all judged on the saved 8-bit image:

* :func:`pgd` (``method`` ``pgd`` / ``mifgsm`` / ``adam``): sign, momentum or Adam steps;
* :func:`apgd`: Auto-PGD (CE or DLR loss; ``targets=k``: APGD-T over the top-k classes);
* :func:`square`: the Square attack, forward passes only, queries counted;
* :func:`cw`: Carlini & Wagner L2 with a binary search over the constant per item;
* :func:`robustness`: an AutoAttack-style report over a set of images (:mod:`.robustness`).

``attack(model, images, method=..., **options)`` dispatches on the method names of
``fvis attack --method`` (:data:`METHODS`).
"""
from __future__ import annotations

from .apgd import APGD, apgd, checkpoints
from .base import AttackResult, judge, norms, quantize
from .cw import cw
from .methods import METHODS, attack, get
from .io import MIN_SIDE, attack_files, heldout_success, save_attack
from .pgd import pgd
from .robustness import RobustnessReport, robustness, robustness_files
from .square import Square, square


__all__ = ["APGD", "AttackResult", "METHODS", "MIN_SIDE", "Square", "apgd", "attack", "attack_files", "checkpoints",
           "cw", "get", "heldout_success", "judge", "norms", "pgd", "quantize", "robustness", "robustness_files", "RobustnessReport", "save_attack",
           "square"]
