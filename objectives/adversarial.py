"""Adversarial objectives on a classifier's logits (model output ``(B, K)``), maximized.

``targeted``: raise class ``t``. ``untargeted``: lower the true class ``y``. Classes are one
per batch item (a ``(B,)`` sequence) or one for all. Losses:

* ``"ce"``: ``log p(t)`` (targeted) / ``-log p(y)`` (untargeted) — the cross-entropy PGD uses;
* ``"margin"``: ``z_t - max_{j != t} z_j`` / ``max_{j != y} z_j - z_y`` (C&W), capped at
  ``kappa`` so an item stops pushing once it is that confident;
* ``"dlr"`` (untargeted only): the difference-of-logits ratio of Croce & Hein (2020),
  ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``; targeted: :func:`dlr_targeted`,
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``pi``: the logits sorted, largest first).

Success (``succeeded``): the top-1 class is ``t`` / is not ``y``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fvis.errors import FvisError
from fvis.hooks import OUTPUT, Activations

from .base import Objective

LOSSES = ("ce", "margin", "dlr")


def _classes(classes: int | Sequence[int] | torch.Tensor, acts: Activations, device) -> torch.Tensor:
    """Per-row class ids for the (possibly copy-expanded) logits rows."""
    c = torch.as_tensor(classes, dtype=torch.long, device=device).flatten()
    c = c.expand(acts.batch) if c.numel() == 1 else acts.rows(c)
    return c.repeat_interleave(acts.copies) if acts.copies > 1 else c


def margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``z_c - max_{j != c} z_j`` per row ``(N,)``."""
    own = logits.gather(1, classes[:, None])[:, 0]
    others = logits.scatter(1, classes[:, None], float("-inf")).amax(1)
    return own - others


def dlr(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Croce & Hein's DLR loss per row ``(N,)`` (to be maximized by the attacker): untargeted
    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``; with ``targets``
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``. Shift- and scale-invariant."""
    top = logits.topk(4 if targets is not None else 3, dim=1).values
    own = logits.gather(1, labels[:, None])[:, 0]
    if targets is None:
        return -margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)
    return -(own - logits.gather(1, targets[:, None])[:, 0]) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def succeeded(logits: torch.Tensor, classes: torch.Tensor, targeted: bool, kappa: float = 0.0) -> torch.Tensor:
    """``(N,)`` bool: top-1 is the target (targeted) / not the true class (untargeted), by a
    logit margin above ``kappa``."""
    m = margin(logits, classes)
    return m > kappa if targeted else -m > kappa


def _adversarial(classes, targeted: bool, loss: str, kappa: float | None) -> Objective:
    if loss not in LOSSES:
        raise FvisError(f"unknown adversarial loss {loss!r}: choose from {', '.join(LOSSES)}")
    if loss == "dlr" and targeted:
        raise FvisError("the targeted DLR loss needs the true labels too: use objectives.adversarial.dlr_targeted")
    sign = 1.0 if targeted else -1.0

    def fn(acts: Activations):
        logits = acts[OUTPUT]
        c = _classes(classes, acts, logits.device)
        if loss == "ce":
            value = sign * logits.log_softmax(1).gather(1, c[:, None])[:, 0]
        elif loss == "dlr":
            value = dlr(logits, c)
        else:
            value = sign * margin(logits, c)
        return value if kappa is None else value.clamp(max=kappa)

    kind = "targeted" if targeted else "untargeted"
    return Objective(fn, [OUTPUT], f"{kind}:{loss}", _checker(classes))


def _checker(*class_sets):
    def check(acts: Activations):
        out = acts[OUTPUT]
        if out.dim() != 2:
            raise FvisError(f"adversarial objectives need (B, classes) logits, got {tuple(out.shape)}")
        for classes in class_sets:
            c = torch.as_tensor(classes).flatten()
            if c.numel() not in (1, acts.batch):
                raise FvisError(f"{c.numel()} classes given for a batch of {acts.batch}")
            if c.min() < 0 or c.max() >= out.shape[1]:
                raise FvisError(f"class out of range: the model has {out.shape[1]} classes "
                                f"(valid 0..{out.shape[1] - 1})")
    return check


def targeted(target: int | Sequence[int] | torch.Tensor, loss: str = "ce", kappa: float | None = None) -> Objective:
    """Raise class ``target`` (one per item, or one for all)."""
    return _adversarial(target, True, loss, kappa)


def untargeted(label: int | Sequence[int] | torch.Tensor, loss: str = "ce", kappa: float | None = None) -> Objective:
    """Lower the true class ``label`` (one per item, or one for all)."""
    return _adversarial(label, False, loss, kappa)


def dlr_targeted(target: int | Sequence[int] | torch.Tensor, label: int | Sequence[int] | torch.Tensor) -> Objective:
    """Croce & Hein's targeted DLR loss: push the true class ``label`` below ``target`` (APGD-T)."""

    def fn(acts: Activations):
        logits = acts[OUTPUT]
        return dlr(logits, _classes(label, acts, logits.device), _classes(target, acts, logits.device))

    return Objective(fn, [OUTPUT], "targeted:dlr", _checker(target, label))
