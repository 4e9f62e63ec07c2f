"""Whole-distribution matching (VITAL, Hajimiri et al. 2025): the sorted activations of each
channel are pulled onto the sorted activations of natural images, i.e. the 1-D Wasserstein-2
distance per channel, which sees every moment of the distribution, not only mean and variance.
"""
from __future__ import annotations

from typing import Mapping

import torch

from fvis.errors import FvisError

from .base import Regularizer
from .matching import _subsample


def quantile_levels(n: int, device=None) -> torch.Tensor:
    """The ``n`` mid-point probability levels ``(i + 0.5) / n`` at which ``n`` sorted samples sit."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


def interpolate_quantiles(table: torch.Tensor, n: int) -> torch.Tensor:
    """``(C, Q)`` quantiles at :func:`quantile_levels` ``(Q)`` -> ``(C, n)`` at ``n`` levels (linear)."""
    q = table.shape[-1]
    if q == n:
        return table
    pos = (quantile_levels(n, table.device) * q - 0.5).clamp(0, q - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=q - 1)
    frac = (pos - lo).to(table.dtype)
    return table[:, lo] * (1 - frac) + table[:, hi] * frac


def sorted_values(act: torch.Tensor, max_positions: int, over: str, batch: int) -> torch.Tensor:
    """Per-channel sorted activations: ``(N, C, H, W)`` -> ``(B, C, n)`` per item (copies of an
    item pooled) or ``(1, C, n)`` for the whole batch (``over="batch"``)."""
    a = _subsample(act, max_positions)
    c = a.shape[1]
    flat = a.reshape(batch, -1, c, a[0, 0].numel()).transpose(1, 2).reshape(batch, c, -1)  # (B, C, copies*n)
    if over == "batch":
        flat = flat.transpose(0, 1).reshape(1, c, -1)
    return flat.sort(-1).values


class SortedMatching(Regularizer):
    """Penalty ``weight * sum_l w_l * mean_{c, k} ((s_k - q_k) / sigma_c)^2``: ``s`` the sorted
    activations of channel ``c`` at layer ``l`` (per item, or of the whole batch with
    ``over="batch"``), ``q`` the natural quantiles at the same levels, ``sigma_c`` the natural
    std (floored at ``std_floor`` x the layer's median). ``(B,)`` per item; in batch mode the
    batch's penalty is shared equally by its items.

    Args:
        quantiles: ``{layer: (C, Q)}`` natural activation quantiles at :func:`quantile_levels` ``(Q)``
            (e.g. from :func:`fvis.reference.reference_stats`).
        layer_weights: relative weight per layer (default 1 each; normalized by the layer count).
        over: ``"item"`` (each image matches the natural distribution) or ``"batch"``.
        scale: ``{layer: (C,)}`` the per-channel unit (default: the quantiles' own std); a huge
            value leaves a channel out (dead BatchNorm channels).
        max_positions: large maps are subsampled on a regular grid of about this many positions.
    """

    def __init__(self, quantiles: Mapping[str, torch.Tensor], weight: float = 1.0,
                 layer_weights: Mapping[str, float] | None = None, over: str = "item",
                 scale: Mapping[str, torch.Tensor] | None = None, std_floor: float = 0.1,
                 max_positions: int = 1024, name: str = "distribution"):
        super().__init__(weight, name)
        if not quantiles:
            raise FvisError("distribution matching needs quantiles for at least one layer")
        if over not in ("item", "batch"):
            raise FvisError(f"over must be 'item' or 'batch', got {over!r}")
        unknown = set(layer_weights or {}) - set(quantiles)
        if unknown:
            raise FvisError(f"layer_weights for layers without quantiles: {sorted(unknown)}")
        self.layers = tuple(quantiles)
        self.layer_weights = {l: float((layer_weights or {}).get(l, 1.0)) / len(quantiles) for l in quantiles}
        self.over, self.max_positions = over, max_positions
        for i, (layer, table) in enumerate(quantiles.items()):
            table = torch.as_tensor(table).float()
            std = torch.as_tensor(scale[layer]).float() if scale and layer in scale else table.std(1)
            self.register_buffer(f"_q{i}", table)
            self.register_buffer(f"_s{i}", std.clamp_min(max(std_floor * float(std.median()), 1e-5)))

    def check(self, acts) -> None:
        for i, layer in enumerate(self.layers):
            c = getattr(self, f"_q{i}").shape[0]
            if acts[layer].dim() < 2 or acts[layer].shape[1] != c:
                raise FvisError(f"quantiles for layer {layer!r} have {c} channels, its output has shape "
                                f"{tuple(acts[layer].shape)}")

    def layer_terms(self, acts) -> dict[str, torch.Tensor]:
        """Unweighted per-layer distances ``{layer: (B,)}``."""
        out = {}
        for i, layer in enumerate(self.layers):
            s = sorted_values(acts[layer], self.max_positions, self.over, acts.batch)
            q = interpolate_quantiles(getattr(self, f"_q{i}").to(s), s.shape[-1])
            d = (((s - q) / getattr(self, f"_s{i}").to(s)[:, None]) ** 2).mean((1, 2))
            out[layer] = d.expand(acts.batch) / acts.batch if self.over == "batch" else d
        return out

    def penalty(self, x, acts):
        return self.weight * sum(self.layer_weights[l] * t for l, t in self.layer_terms(acts).items())


def gaussian_quantiles(stats: Mapping[str, Mapping[str, torch.Tensor]], levels: int = 64,
                       over: str = "item") -> dict[str, torch.Tensor]:
    """Quantiles ``{layer: (C, levels)}`` of normal distributions with the natural ``mean`` and
    ``std`` of ``stats`` (e.g. :func:`regularizers.batchnorm_stats`: data-free); per item the
    spread is ``target_std * std`` (the within-image spread), for a whole batch ``std``."""
    z = torch.distributions.Normal(0.0, 1.0).icdf(quantile_levels(levels))
    out = {}
    for layer, s in stats.items():
        mean, std = torch.as_tensor(s["mean"]).float(), torch.as_tensor(s["std"]).float()
        target = torch.as_tensor(s.get("target_std", torch.ones_like(std))).float() if over == "item" else 1.0
        spread = torch.where(std < 1e5, std * target, torch.zeros_like(std))  # dead channels: a point
        out[layer] = mean[:, None] + spread[:, None] * z[None]
    return out
