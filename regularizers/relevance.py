"""Relevant information flow (VITAL, Görgün et al. 2025): the input changes only through the units
most relevant to what is being raised, not through every unit that happens to raise it.

At each of ``layers``, per row (each transformed copy of each item) and channel ``c``, the relevance
is gradient x activation summed over positions, ``R_c = sum_p a_cp * (-dL/da_cp)`` (``L`` the loss the
engine minimizes, ``-objective + penalties``: without penalties that read the model, the objective's
own gradient x activation, LRP-0's value for a ReLU network; VITAL uses LRP). The gradient flowing back
through the layer keeps the ``keep`` share of channels with the largest ``R_c`` and is zero elsewhere.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from fvis.errors import FvisError

from .base import Regularizer


def channel_relevance(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` activation and the loss's gradient there -> ``(N, C)`` relevance
    ``sum over positions of a * (-grad)`` (positive: raising the channel lowers the loss)."""
    return -(activation.float() * grad.float()).flatten(2).sum(2) if activation.dim() > 2 \
        else -(activation.float() * grad.float())


def relevant_channels(relevance: torch.Tensor, keep: float) -> torch.Tensor:
    """``(N, C)`` relevance -> ``(N, C)`` 0/1 mask of each row's ``ceil(keep * C)`` most relevant channels."""
    k = max(1, math.ceil(keep * relevance.shape[1] - 1e-9))  # 0.07 of 100: 7, not 8
    return torch.zeros_like(relevance).scatter_(1, relevance.topk(k, dim=1).indices, 1.0)


class RelevanceFilter(Regularizer):
    """Keep the gradient of the ``keep`` share of most relevant channels at ``layers`` (modules whose output is
    one ``(N, C, H, W)`` or ``(N, C)`` tensor; channels-last maps such as Swin's ``(N, H, W, C)`` are not told
    apart); no penalty. ``keep=1``: the gradient unchanged. At a layer that a matching penalty also reads, the
    penalty's gradient there is filtered too (it is part of the loss).

    >>> reg.RelevanceFilter(["_blocks.10", "_blocks.13"], keep=0.25)
    """

    def __init__(self, layers: Sequence[str], keep: float = 0.25):
        super().__init__(1.0, name="relevance")
        if not 0 < keep <= 1:
            raise FvisError(f"relevance: keep must be a share of channels in (0, 1], got {keep!r}")
        if not layers:
            raise FvisError("relevance: no layers to filter")
        self.layers, self.keep = tuple(layers), float(keep)

    def filter(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The gradient at one layer, zero outside each row's relevant channels."""
        if self.keep >= 1:
            return grad
        mask = relevant_channels(channel_relevance(activation, grad), self.keep)
        return grad * mask.reshape(*mask.shape, *([1] * (grad.dim() - 2))).to(grad.dtype)

    def gradient_filters(self) -> dict:
        return {name: self.filter for name in self.layers}

    def check(self, acts) -> None:
        for name in self.layers:
            a = acts._raw(name)  # the module's own output: the filter acts on it only when it is one tensor
            if not isinstance(a, torch.Tensor):
                raise FvisError(f"relevance: layer {name!r} returns {type(a).__name__}, not a tensor; name a module "
                                f"whose output is one (N, C, H, W) or (N, C) tensor")
            if a.dim() not in (2, 4):
                raise FvisError(f"relevance: layer {name!r} gives {tuple(a.shape)}; channels are read from "
                                f"(N, C, H, W) or (N, C) outputs")
