"""Activation-distribution matching: keep a layer's per-channel statistics near natural ones.

Natural statistics come from the model's own BatchNorm layers (data-free) or from reference
images (:func:`fvis.reference.reference_stats`). Both are expressed the same way: for each
layer, per-channel ``mean`` and ``std`` of natural activations, and optionally a ``target_std``
(the spread *within one image* that natural images show, in units of ``std``).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from fvis.errors import FvisError
from fvis.hooks import named_layers

from .base import Regularizer


def _channel_stats(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item, per-channel spatial mean and std of ``(N, C, H, W)`` (or ``(N, C)``): two ``(N, C)``."""
    flat = act.flatten(2) if act.dim() > 2 else act.unsqueeze(-1)
    var, mean = torch.var_mean(flat, -1, correction=0)
    return mean, (var + 1e-8).sqrt()


def _subsample(act: torch.Tensor, max_positions: int) -> torch.Tensor:
    """Every s-th row and column of a ``(N, C, H, W)`` map so that at most ~``max_positions``
    positions remain (statistics estimated on a regular grid; cheaper forward and backward)."""
    if act.dim() != 4 or act.shape[-1] * act.shape[-2] <= max_positions:
        return act
    s = math.ceil(math.sqrt(act.shape[-1] * act.shape[-2] / max_positions))
    return act[..., ::s, ::s]


class ActivationMatching(Regularizer):
    """Penalty per item ``(B,)``: ``weight * sum_l w_l * mean_c[(mu - m)^2 / s^2 + (sigma - t s)^2 / s^2]``
    where ``mu, sigma`` are the item's spatial mean and std of channel ``c`` at layer ``l`` and
    ``m, s, t`` the natural mean, std and relative within-image spread. Unit-free, so layers of
    any scale count alike; ``w_l`` (``layer_weights``) default to ``1 / L``.
    With ``class_means`` (``{layer: (K, C)}``) and ``classes`` (``(B,)`` class index per item, -1
    for none), also ``+ class_weight * (1 - cos(pooled activation, class mean))``.

    With ``over="batch"`` (DeepInversion) the statistics are those of the whole batch (every item
    and position pooled) against ``m`` and ``s`` (``t`` is not used: a mixed batch should spread
    like the population); the batch's penalty is shared equally by its items.

    Args:
        stats: ``{layer: {"mean": (C,), "std": (C,), "target_std": (C,) optional}}``.
        weight: overall weight (see :func:`fvis.prototype.balance` to set it automatically).
        std_floor: natural stds are floored at this fraction of the layer's median std, so a
            rarely-active channel of a small reference set cannot dominate.
        max_positions: statistics of large maps are estimated on a regular subgrid of about
            this many positions (cheaper; the estimate of a mean over 1024 positions is tight).
    """

    def __init__(self, stats: Mapping[str, Mapping[str, torch.Tensor]], weight: float = 1.0,
                 layer_weights: Mapping[str, float] | None = None, class_means: Mapping[str, torch.Tensor] | None = None,
                 classes=None, class_weight: float = 1.0, std_floor: float = 0.1, max_positions: int = 1024,
                 over: str = "item", name: str = "matching"):
        super().__init__(weight, name)
        if not stats:
            raise FvisError("activation matching needs statistics for at least one layer")
        if over not in ("item", "batch"):
            raise FvisError(f"over must be 'item' or 'batch', got {over!r}")
        self.over = over
        self.layers = tuple(stats)
        lw = dict(layer_weights or {})
        unknown = set(lw) - set(stats)
        if unknown:
            raise FvisError(f"layer_weights for layers without statistics: {sorted(unknown)}")
        self.layer_weights = {l: float(lw.get(l, 1.0)) / len(stats) for l in stats}
        for i, (layer, s) in enumerate(stats.items()):
            mean, std = torch.as_tensor(s["mean"]).float(), torch.as_tensor(s["std"]).float()
            std = std.clamp_min(max(std_floor * float(std.median()), 1e-5))  # rarely-active channels
            target = torch.as_tensor(s.get("target_std", torch.ones_like(std))).float()
            self.register_buffer(f"_stat{i}", torch.stack([mean, std, target]))
        self.class_means = {l: torch.as_tensor(v).float() for l, v in (class_means or {}).items()}
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.long)
        self.class_weight = float(class_weight)
        self.max_positions = max_positions

    def _stat(self, i: int) -> torch.Tensor:
        return getattr(self, f"_stat{i}")

    def check(self, acts) -> None:
        for i, layer in enumerate(self.layers):
            act = acts[layer]
            c = self._stat(i).shape[1]
            if act.dim() < 2 or act.shape[1] != c:
                raise FvisError(f"matching statistics for layer {layer!r} have {c} channels, "
                                f"its output has shape {tuple(act.shape)}")
        if self.classes is not None and self.classes.numel() != acts.batch:
            raise FvisError(f"matching has classes for {self.classes.numel()} items, the batch has {acts.batch}")

    def layer_terms(self, acts) -> dict[str, torch.Tensor]:
        """Unweighted per-layer penalties ``{layer: (B,)}`` (copies of an item averaged)."""
        out = {}
        for i, layer in enumerate(self.layers):
            mean, std, target = self._stat(i).to(acts[layer])
            act = _subsample(acts[layer], self.max_positions)
            if self.over == "batch":  # (N, C, ...) -> (1, C, N * positions): one population
                act = act.transpose(0, 1).reshape(1, act.shape[1], -1)
                target = torch.ones_like(target)
            mu, sigma = _channel_stats(act)
            term = (((mu - mean) / std) ** 2 + ((sigma - target * std) / std) ** 2).mean(1)
            out[layer] = term.expand(acts.batch) / acts.batch if self.over == "batch" else term.view(acts.batch, -1).mean(1)
        return out

    def penalty(self, x, acts):
        total = sum(self.layer_weights[l] * t for l, t in self.layer_terms(acts).items())
        if self.class_means and self.classes is not None:
            cls = acts.rows(self.classes.to(x.device))
            has = cls >= 0
            for layer, means in self.class_means.items():
                pooled = acts[layer].flatten(2).mean(-1) if acts[layer].dim() > 2 else acts[layer]
                pooled = pooled.view(acts.batch, acts.copies, -1).mean(1)
                target = means.to(pooled)[cls.clamp_min(0)]
                cos = torch.nn.functional.cosine_similarity(pooled, target, dim=1)
                total = total + self.class_weight / len(self.class_means) * torch.where(has, 1 - cos, 0.0)
        return self.weight * total


def batchnorm_layers(model: nn.Module, which: str = "all") -> list[str]:
    """Names of the model's BatchNorm layers: ``"all"``, or ``"per-block"``: in each parent
    module the narrowest one (fewest channels; the last on ties), e.g. the projection BN that
    ends each EfficientNet block: one layer per block, a fraction of the cost of all."""

    bns = {n: m for n, m in named_layers(model).items() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if which == "all":
        return list(bns)
    if which != "per-block":
        raise FvisError(f"unknown BatchNorm layer choice {which!r}: use all or per-block")
    best: dict[str, str] = {}
    for name, bn in bns.items():
        parent = name.rpartition(".")[0]
        if parent not in best or bn.num_features <= bns[best[parent]].num_features:
            best[parent] = name
    chosen = set(best.values())
    return [n for n in bns if n in chosen]


def batchnorm_stats(model: nn.Module, layers=None, target_std: float = 1.0) -> dict[str, dict[str, torch.Tensor]]:
    """Data-free natural statistics from BatchNorm running averages, in terms of each BN layer's
    *output* (which fvis captures): natural inputs ``~ (running_mean, running_var)`` give outputs
    with mean ``beta`` and std ``|gamma| sqrt(var / (var + eps))``. ``target_std``: the within-image
    spread asked for, relative to that population std. Dead channels (``|gamma| < 1e-3`` or
    ``var < 1e-6``) are ignored. ``layers``: BN module names, or ``"all"`` / ``"per-block"``
    (:func:`batchnorm_layers`; default all)."""

    all_layers = named_layers(model)
    bns = {n: m for n, m in all_layers.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if isinstance(layers, str):
        layers = batchnorm_layers(model, layers)
    if layers is not None:
        missing = [l for l in layers if l not in bns]
        if missing:
            raise FvisError(f"not BatchNorm layers: {missing}")
        bns = {l: bns[l] for l in layers}
    if not bns:
        raise FvisError("the model has no BatchNorm layers with running statistics: use reference images")
    stats = {}
    for name, bn in bns.items():
        if bn.running_var is None:
            raise FvisError(f"BatchNorm layer {name!r} tracks no running statistics")
        var = bn.running_var.detach().float()
        gamma = bn.weight.detach().float().abs() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(var)
        dead = (gamma < 1e-3) | (var < 1e-6)
        std = torch.where(dead, torch.full_like(var, 1e6), gamma * (var / (var + bn.eps)).sqrt())
        target = torch.where(dead, torch.zeros_like(var), torch.full_like(var, float(target_std)))
        stats[name] = {"mean": beta.cpu(), "std": std.cpu(), "target_std": target.cpu()}
    return stats
