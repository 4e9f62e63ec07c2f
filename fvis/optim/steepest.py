"""Steepest-ascent optimizers for adversarial perturbations (I-FGSM / PGD, MI-FGSM).

They are ordinary ``torch.optim.Optimizer``s, so :func:`fvis.optimize` runs them like Adam.
Parameters must be batch-first: step directions are normalized per item.
"""
from __future__ import annotations

import torch



def _per_item(t: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (t.dim() - 1)))


class SteepestDescent(torch.optim.Optimizer):
    """``p -= lr * direction(grad)``, the direction being steepest for the norm ball:
    ``norm="linf"``: ``sign(g)`` (I-FGSM / PGD); ``norm="l2"``: ``g / ||g||_2`` per item (PGD-L2).

    ``momentum=mu > 0`` accumulates per-item L1-normalized gradients first,
    ``m = mu * m + g / mean|g|`` (MI-FGSM, Dong et al. 2018; ``mu = 1`` is theirs).
    """

    def __init__(self, params, lr: float, norm: str = "linf", momentum: float = 0.0):
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if lr <= 0 or momentum < 0:
            raise ValueError(f"need lr > 0 and momentum >= 0, got lr={lr}, momentum={momentum}")
        super().__init__(params, {"lr": lr, "norm": norm, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["momentum"]:
                    mean_abs = g.abs().flatten(1).mean(1).clamp_min(1e-12)
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(g / _per_item(g, mean_abs))
                    g = buf
                if group["norm"] == "linf":
                    direction = g.sign()
                else:
                    direction = g / _per_item(g, g.flatten(1).norm(dim=1).clamp_min(1e-12))
                p.sub_(group["lr"] * direction)
        return loss
