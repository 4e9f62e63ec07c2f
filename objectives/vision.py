"""Objectives on layer activations and model outputs.

Activation layout: ``(B, C, H, W)`` for conv layers (channel = dim 1),
``(B, T, D)`` for sequence models (channel = last dim, averaged over T),
``(B, C)`` for flat layers. Every function returns an :class:`Objective` giving
``(B,)`` scores; all are maximized.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fvis.classes import resolve_class
from fvis.errors import FvisError, suggest
from fvis.hooks import OUTPUT, Activations

from .base import Objective


def _channels(act: torch.Tensor) -> int:
    return act.shape[-1] if act.dim() == 3 else act.shape[1]


def _check_channel(layer: str, channel: int):
    def check(acts: Activations):
        act = acts[layer]
        if act.dim() < 2:
            raise FvisError(f"layer {layer!r} output has shape {tuple(act.shape)}: no channel dimension")
        n = _channels(act)
        if not 0 <= channel < n:
            raise FvisError(f"channel {channel} out of range for layer {layer!r} with {n} channels: valid 0..{n - 1}")
    return check


def _channel_map(act: torch.Tensor, channel: int) -> torch.Tensor:
    """``(B, ...)`` values of one channel (spatial / token positions kept)."""
    return act[..., channel] if act.dim() == 3 else act[:, channel]


def channel(layer: str, channel: int) -> Objective:
    """Mean activation of ``channel`` over all positions of ``layer``."""
    def fn(acts):
        m = _channel_map(acts[layer], channel)
        return m.flatten(1).mean(1) if m.dim() > 1 else m
    return Objective(fn, [layer], f"channel:{layer}:{channel}", _check_channel(layer, channel))


def neuron(layer: str, channel: int, x: int | None = None, y: int | None = None) -> Objective:
    """One unit: ``channel`` at column ``x``, row ``y`` of a ``(B, C, H, W)`` map (default: the centre,
    ``x = W // 2``, ``y = H // 2``). For ``(B, T, D)`` activations ``x`` is the position (default last)."""
    def where(act):
        if act.dim() == 4:
            h, w = act.shape[-2:]
            return (h // 2 if y is None else y), (w // 2 if x is None else x)
        return None, (-1 if x is None else x)

    def fn(acts):
        act = acts[layer]
        if act.dim() == 4:
            yy, xx = where(act)
            return act[:, channel, yy, xx]
        if act.dim() == 3:
            return act[:, where(act)[1], channel]
        return act[:, channel]

    def check(acts):
        _check_channel(layer, channel)(acts)
        act = acts[layer]
        if act.dim() == 4:
            h, w = act.shape[-2:]
            yy, xx = where(act)
            if not (0 <= xx < w and 0 <= yy < h):
                raise FvisError(f"neuron position x={xx}, y={yy} outside layer {layer!r} of "
                                f"width {w} and height {h}: valid x 0..{w - 1}, y 0..{h - 1}")
        elif act.dim() == 3 and not -act.shape[1] <= where(act)[1] < act.shape[1]:
            raise FvisError(f"position {x} outside layer {layer!r} with {act.shape[1]} positions")

    pos = "" if x is None and y is None else f":{'' if x is None else x}:{'' if y is None else y}"
    return Objective(fn, [layer], f"neuron:{layer}:{channel}{pos}", check)


def layer(layer: str) -> Objective:
    """DeepDream: mean squared activation of the whole layer."""
    return Objective(lambda acts: acts[layer].pow(2).flatten(1).mean(1), [layer], f"layer:{layer}")


def direction(layer: str, vector: torch.Tensor, cossim_pow: float = 0.0) -> Objective:
    """Activation along ``vector`` (length C), averaged over positions:
    ``dot(a, v) * max(cos(a, v), 0.1) ** cossim_pow`` (``cossim_pow=0``: plain dot product)."""
    vector = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts):
        act = acts[layer]
        a = act.movedim(1, -1) if act.dim() == 4 else act  # channels last
        v = vector.to(a.device, a.dtype)
        dot = a @ v
        if cossim_pow:
            cos = dot / (a.norm(dim=-1) * v.norm()).clamp_min(1e-8)
            dot = dot * cos.clamp_min(0.1) ** cossim_pow
        return dot.flatten(1).mean(1) if dot.dim() > 1 else dot

    def check(acts):
        n = _channels(acts[layer])
        if vector.numel() != n:
            raise FvisError(f"direction has {vector.numel()} entries but layer {layer!r} has {n} channels")

    return Objective(fn, [layer], f"direction:{layer}", check)


def class_logit(c: int | str, names: Sequence[str] | None = None) -> Objective:
    """The model's output logit for class ``c`` (an index, or a class name looked up in
    ``names``, ImageNet-1k by default)."""
    index = resolve_class(c, names) if isinstance(c, str) else int(c)

    def check(acts):
        out = acts[OUTPUT]
        if out.dim() != 2:
            raise FvisError(f"logit objective needs (B, classes) model output, got {tuple(out.shape)}")
        if not 0 <= index < out.shape[1]:
            raise FvisError(f"class {index} out of range: the model has {out.shape[1]} classes (valid 0..{out.shape[1] - 1})")

    label = f"logit:{index}" if isinstance(c, int) or str(c).isdigit() else f"logit:{index}:{c}"
    return Objective(lambda acts: acts[OUTPUT][:, index], [OUTPUT], label, check)


SCORES = ("logit", "log_prob", "log_odds")


def class_logits(classes: Sequence[int], score: str = "logit") -> Objective:
    """Item ``i`` scores class ``classes[i]`` of the (B, K) output: many class images in one batch
    without one masked objective per item.

    ``score``: ``logit``; ``log_prob`` (log-softmax: its gradient fades as p nears 1);
    ``log_odds`` (``log p / (1 - p)`` = the logit minus the log-sum-exp of the other logits: the
    class's own gradient stays 1 and the push-down goes to the closest rivals, e.g. other breeds).
    """
    if score not in SCORES:
        raise FvisError(f"class score must be {' | '.join(SCORES)}, got {score!r}{suggest(score, SCORES)}")
    index = torch.as_tensor(list(classes), dtype=torch.long)

    def fn(acts):
        out = acts[OUTPUT]
        rows = acts.rows(index.to(out.device)).repeat_interleave(acts.copies)  # item-major copies
        if score == "log_prob":
            out = out.log_softmax(1)
        own = out.gather(1, rows[:, None])[:, 0]
        if score != "log_odds":
            return own
        rivals = out.scatter(1, rows[:, None], float("-inf"))
        return own - rivals.logsumexp(1)

    def check(acts):
        out = acts[OUTPUT]
        if out.dim() != 2:
            raise FvisError(f"class objective needs (B, classes) model output, got {tuple(out.shape)}")
        if index.numel() != acts.batch:
            raise FvisError(f"{index.numel()} classes for a batch of {acts.batch}")
        if score == "log_odds" and out.shape[1] < 2:
            raise FvisError(f"log_odds needs at least 2 classes (rivals), the model has {out.shape[1]}")
        bad = [int(c) for c in index if not 0 <= c < out.shape[1]]
        if bad:
            raise FvisError(f"class {bad[0]} out of range: the model has {out.shape[1]} classes (valid 0..{out.shape[1] - 1})")

    return Objective(fn, [OUTPUT], "logits" if score == "logit" else score, check)


def equidistant() -> Objective:
    """Minus the variance of the class probabilities: maximal where every class is equally
    likely (Leap Labs' "equidistant baseline", a neutral starting input for prototypes)."""
    return Objective(lambda acts: -acts[OUTPUT].softmax(1).var(1) * acts[OUTPUT].shape[1] ** 2, [OUTPUT],
                     "equidistant")


def diversity(layer: str, groups: Sequence[int] | None = None) -> Objective:
    """Per item: minus the mean cosine similarity of its Gram matrix at ``layer`` to the other
    items' (Lucid's diversity). ``groups`` (one id per item): compare only items of the same group
    (e.g. several prototypes per class). Weight it ~1e2 at batch 4; needs batch >= 2."""
    group = None if groups is None else torch.as_tensor(list(groups))

    def fn(acts):
        act = acts[layer]
        a = act.flatten(2) if act.dim() == 4 else act.transpose(1, 2)  # (B, C, N)
        gram = torch.nn.functional.normalize((a @ a.transpose(1, 2)).flatten(1), dim=1)
        sim = gram @ gram.T
        g = None if group is None else acts.rows(group.to(sim.device)).repeat_interleave(acts.copies)
        same = torch.ones_like(sim, dtype=torch.bool) if g is None else g[:, None] == g[None]
        same.fill_diagonal_(False)
        return -(sim * same).sum(1) / same.sum(1).clamp_min(1)

    def check(acts):
        if acts.batch < 2:
            raise FvisError("diversity needs a batch of at least 2")
        if group is not None and group.numel() != acts.batch:
            raise FvisError(f"diversity has groups for {group.numel()} items, the batch has {acts.batch}")

    return Objective(fn, [layer], f"diversity:{layer}", check)
