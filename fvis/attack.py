"""Adversarial examples (kept for existing imports): everything now lives in :mod:`fvis.attacks`,
one attack per module. ``attack(model, images, method="pgd", ...)`` is :func:`fvis.attacks.attack`:
with the old methods (``pgd``, ``mifgsm``, ``adam``) it runs :func:`fvis.attacks.pgd` exactly as
before; the new names (``apgd``, ``apgd-t``, ``square``, ``cw``) reach the new attacks."""
from __future__ import annotations

from .attacks import (APGD, METHODS, MIN_SIDE, AttackResult, Square, apgd, attack, attack_files, checkpoints, cw,
                      heldout_success, judge, norms, pgd, quantize, robustness, save_attack, square)
from .attacks.pgd import METHODS as PGD_METHODS

__all__ = ["APGD", "AttackResult", "METHODS", "MIN_SIDE", "PGD_METHODS", "Square", "apgd", "attack", "attack_files",
           "checkpoints", "cw", "heldout_success", "judge", "norms", "pgd", "quantize", "robustness", "save_attack",
           "square"]
