"""Integrated gradients (Sundararajan et al. 2017) with its completeness check."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..baselines import make_baseline
from ..display import normalize, reduce_channels
from ..errors import FvisError
from .scorer import Attribution, Scorer, as_batch, finish, gradients, plain_settings

# The default number of path points: the smallest power of two at which the completeness gap stays
# under the 5% warning on every offline photo (measured in results/explain/ig_steps.md).
STEPS = 256
GAP_WARNING = 0.05


def _path(steps: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and quadrature weights (summing to 1) for the path integral."""
    if steps < 1:
        raise FvisError(f"integrated gradients needs steps >= 1, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((nodes + 1) / 2, dtype=torch.float32), torch.tensor(weights / 2, dtype=torch.float32)
    if method == "trapezoid":
        if steps < 2:
            raise FvisError("the trapezoid rule needs steps >= 2")
        w = torch.full((steps,), 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
        return torch.linspace(0, 1, steps), w
    if method == "midpoint":
        return (torch.arange(steps) + 0.5) / steps, torch.full((steps,), 1.0 / steps)
    raise FvisError(f"unknown integration method {method!r}: gausslegendre, trapezoid or midpoint")


def integrated_gradients(model: nn.Module, x: torch.Tensor, target=None, *, baseline="black", steps: int = STEPS,
                         method: str = "gausslegendre", baseline_images: str | Path | None = None,
                         seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """Integrated gradients (Sundararajan et al. 2017) from ``baseline`` to ``x``.

    ``baseline``: ``"black"``, ``"blur"``, ``"noise"``, ``"mean"`` (mean image of
    ``baseline_images``), ``"gray"``, a number or a tensor. ``steps`` points on the straight
    path, all items' points batched together (``batch_size`` rows per forward/backward);
    ``method``: ``"gausslegendre"`` (default, as captum), ``"trapezoid"`` or ``"midpoint"``.
    ``raw`` ``(B, C, H, W)`` = (x - x0) * weighted mean gradient; heatmap: |sum over channels|.
    ``info``: ``baseline_score`` f(x0), ``attribution_sum``, ``completeness_gap``
    = sum(raw) - (f(x) - f(x0)) and ``relative_gap`` = |gap| / |f(x) - f(x0)|, per item.
    """
    t0 = time.perf_counter()
    x = as_batch(x, model)
    x0 = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    alphas, weights = _path(steps, method)
    alphas, weights = alphas.to(x.device), weights.to(x.device)
    b = x.shape[0]
    items = torch.arange(b).repeat_interleave(steps)  # item-major rows: item i, path points 0..steps-1

    def rows(part):
        idx = torch.arange(part.start, part.stop, device=x.device)
        i, k = idx // steps, idx % steps
        return x0[i] + alphas[k].view(-1, 1, 1, 1) * (x[i] - x0[i])

    mean_grad = torch.zeros_like(x)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        with torch.no_grad():
            base_score = scorer(x0, torch.arange(b))[0].float().cpu()
        for part, grad, _ in gradients(scorer, rows, b * steps, items, batch_size, progress, "integrated gradients"):
            k = torch.arange(part.start, part.stop, device=x.device) % steps
            mean_grad.index_add_(0, items[part].to(x.device), grad * weights[k].view(-1, 1, 1, 1))
    raw = (x - x0) * mean_grad
    total = raw.double().flatten(1).sum(1).float().cpu()
    delta = score - base_score
    gap = total - delta
    relative = gap.abs() / delta.abs().clamp_min(1e-12)
    if (relative > GAP_WARNING).any():
        worst = int(relative.argmax())
        warnings.warn(f"fvis: integrated gradients completeness gap is {float(relative[worst]):.1%} of "
                      f"f(x) - f(baseline) (item {worst}); use more steps (now {steps})")
    name = baseline if isinstance(baseline, str) else ("constant" if isinstance(baseline, (int, float)) else "tensor")
    return finish("ig", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   plain_settings(baseline=name if not isinstance(baseline, (int, float)) else float(baseline),
                             steps=steps, method=method, seed=seed, batch_size=batch_size,
                             baseline_images=str(baseline_images) if baseline_images else None),
                   baseline_score=base_score, attribution_sum=total, completeness_gap=gap, relative_gap=relative)
