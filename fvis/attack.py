"""Adversarial examples (kept for existing imports): everything now lives in :mod:`fvis.attacks`,
one attack per module. ``attack(...)`` here is :func:`fvis.attacks.pgd` (PGD / MI-FGSM / Adam),
as it always was; :func:`fvis.attacks.attack` dispatches on every method name."""
from __future__ import annotations

from .attacks import (APGD, METHODS, MIN_SIDE, AttackResult, Square, apgd, attack_files, checkpoints, cw,
                      heldout_success, judge, norms, pgd, quantize, robustness, save_attack, square)
from .attacks.methods import attack as _dispatch
from .attacks.pgd import METHODS as PGD_METHODS

attack = _dispatch

__all__ = ["APGD", "AttackResult", "METHODS", "MIN_SIDE", "PGD_METHODS", "Square", "apgd", "attack", "attack_files",
           "checkpoints", "cw", "heldout_success", "judge", "norms", "pgd", "quantize", "robustness", "save_attack",
           "square"]
