"""Objectives for causal language models (driven through :class:`fvis.lm.LanguageModel`).

Activation layout: ``(B, T, D)`` over the full sequence ``prefix + prompt + suffix (+ tail)``;
the model output is next-token logits ``(B, keep, V)`` of the last ``keep`` positions.
All objectives return ``(B,)`` scores and are maximized.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fvis.errors import FvisError
from fvis.hooks import OUTPUT, named_layers

from .base import Objective

POSITIONS = ("last", "all")


def target_logprob(target: Sequence[int] | torch.Tensor, name: str | None = None) -> Objective:
    """Log-probability of the token sequence ``target`` after the prompt, by teacher forcing:
    ``sum_j log p(target[j] | prompt, target[:j])``. Needs the model output to hold the logits of
    the last ``len(target)`` positions, i.e. a :class:`LanguageModel` whose ``tail`` is
    ``target[:-1]`` (``fvis.invert`` sets this up). A 2-D ``target`` ``(B, n)`` gives each batch
    item its own target (picked with ``acts.rows``, so finished items may leave the batch); the
    model's tail must then suit every row (targets that differ in their last token only)."""
    ids = torch.as_tensor(target if isinstance(target, torch.Tensor) else list(target), dtype=torch.long)
    if ids.numel() == 0:
        raise FvisError("the target has no tokens")
    per_item = ids.dim() == 2
    n = ids.shape[-1]

    def fn(acts):
        logits = acts[OUTPUT][:, -n:].float()
        logp = torch.log_softmax(logits, -1)
        rows = acts.rows(ids) if per_item else ids.view(1, n).expand(logp.shape[0], n)
        return logp.gather(-1, rows.to(logp.device)[..., None]).sum((1, 2))

    def check(acts):
        out = acts[OUTPUT]
        if out.dim() != 3 or out.shape[1] < n:
            raise FvisError(f"target of {n} tokens needs (B, >= {n}, V) logits, got {tuple(out.shape)}")
        if int(ids.max()) >= out.shape[-1]:
            raise FvisError(f"target token {int(ids.max())} out of range for a vocabulary of {out.shape[-1]}")
        if per_item and ids.shape[0] != acts.total:
            raise FvisError(f"{ids.shape[0]} per-item targets for a batch of {acts.total}")

    label = "per-item" if per_item else "+".join(map(str, ids.tolist()))
    return Objective(fn, [OUTPUT], name or f"logp:{label}", check)


def _positions(act: torch.Tensor, position) -> torch.Tensor:
    """``(B, T, ...)`` -> ``(B, ...)``: one position, or the mean over all; ``"each"``: every
    position, ``(B, T, ...)`` unchanged (for scans of a corpus, not for optimizing)."""
    if position == "each":
        return act
    if position == "all":
        return act.mean(1)
    return act[:, -1 if position == "last" else int(position)]


def _check_position(layer: str, position):
    if position in POSITIONS or position == "each":
        return
    if not isinstance(position, int):
        raise FvisError(f"position must be 'last', 'all' or an integer, got {position!r}")


def _check_seq(layer: str, act: torch.Tensor, position) -> None:
    if act.dim() != 3:
        raise FvisError(f"layer {layer!r} output has shape {tuple(act.shape)}: expected (B, T, D)")
    if isinstance(position, int) and not -act.shape[1] <= position < act.shape[1]:
        raise FvisError(f"position {position} outside layer {layer!r} with {act.shape[1]} positions")


def token_neuron(layer: str, index: int, position="last") -> Objective:
    """Unit ``index`` of a ``(B, T, D)`` layer at ``position`` (``"last"``, ``"all"`` = mean over
    positions, or an index into the full sequence)."""
    _check_position(layer, position)

    def check(acts):
        act = acts[layer]
        _check_seq(layer, act, position)
        if not 0 <= index < act.shape[-1]:
            raise FvisError(f"neuron {index} out of range for layer {layer!r} with {act.shape[-1]} units: "
                            f"valid 0..{act.shape[-1] - 1}")

    return Objective(lambda acts: _positions(acts[layer][..., index], position), [layer],
                     f"neuron:{layer}:{index}@{position}", check)


def token_direction(layer: str, vector: torch.Tensor, position="last") -> Objective:
    """Dot product of a ``(B, T, D)`` layer (e.g. the residual stream after a block) with
    ``vector`` (length D) at ``position`` (``"last"``, ``"all"``, or an index)."""
    _check_position(layer, position)
    vector = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts):
        act = acts[layer]
        return _positions(act @ vector.to(act.device, act.dtype), position)

    def check(acts):
        act = acts[layer]
        _check_seq(layer, act, position)
        if act.shape[-1] != vector.numel():
            raise FvisError(f"direction has {vector.numel()} entries but layer {layer!r} has {act.shape[-1]}")

    return Objective(fn, [layer], f"direction:{layer}@{position}", check)


# -- transformer anatomy ------------------------------------------------------------------------
def blocks(model) -> list[str]:
    """Names of the transformer blocks of a (wrapped) causal LM, in order."""
    names = named_layers(model)
    for parent in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers"):
        found = [n for n in names if n.startswith(parent + ".") and n[len(parent) + 1:].isdigit()]
        if found:
            return sorted(found, key=lambda n: int(n.rsplit(".", 1)[1]))
    raise FvisError(f"cannot find the transformer blocks of {type(getattr(model, 'net', model)).__name__}")


def _block(model, block: int) -> str:
    names = blocks(model)
    if not -len(names) <= block < len(names):
        raise FvisError(f"block {block} out of range: the model has {len(names)} blocks (valid 0..{len(names) - 1})")
    return names[block]


def residual(model, block: int) -> str:
    """Layer name of the residual stream after ``block`` (the block's output)."""
    return _block(model, block)


def mlp_neuron(model, block: int, index: int, position="last") -> Objective:
    """MLP neuron ``index`` of ``block`` (the hidden unit after the nonlinearity, before the
    down-projection) at ``position``. Llama-style gated MLPs: ``act_fn(gate) * up``;
    GPT-2-style: the ``mlp.act`` output."""
    _check_position("mlp", position)
    b = _block(model, block)
    names = named_layers(model)
    if f"{b}.mlp.act_fn" in names and f"{b}.mlp.up_proj" in names:  # gated (Llama, Mistral, Qwen, SmolLM)
        act, up = f"{b}.mlp.act_fn", f"{b}.mlp.up_proj"
        layers = [act, up]

        def value(acts):
            return acts[act][..., index] * acts[up][..., index]

        first = act
    elif f"{b}.mlp.act" in names:  # GPT-2
        first = f"{b}.mlp.act"
        layers = [first]

        def value(acts):
            return acts[first][..., index]
    else:
        raise FvisError(f"unknown MLP layout in {b!r}: use neuron LAYER:INDEX on a module from `fvis layers`")

    def check(acts):
        a = acts[first]
        _check_seq(first, a, position)
        if not 0 <= index < a.shape[-1]:
            raise FvisError(f"MLP neuron {index} out of range for block {block} with {a.shape[-1]} neurons: "
                            f"valid 0..{a.shape[-1] - 1}")

    return Objective(lambda acts: _positions(value(acts), position), layers, f"mlp:{block}:{index}@{position}", check)


def parse_neuron(model, spec: str, position="last") -> Objective:
    """``"mlp.L:I"`` (MLP neuron I of block L), ``"resid.L:I"`` (residual-stream unit I after block
    L), or ``"LAYER:I"`` (unit I of any ``(B, T, D)`` module named in ``fvis layers``)."""
    layer, sep, index = spec.rpartition(":")
    if not sep or not layer:
        raise FvisError(f"neuron spec must be LAYER:INDEX (e.g. mlp.3:100), got {spec!r}")
    try:
        i = int(index)
    except ValueError:
        raise FvisError(f"neuron index must be an integer, got {index!r} in {spec!r}") from None
    if layer.lstrip("-").isdigit():  # "3:100": a block number without its kind
        raise FvisError(f"neuron {spec!r}: name the kind of unit, mlp.{layer}:{i} (MLP neuron) or resid.{layer}:{i} "
                        f"(residual stream), or a module from `fvis layers`")
    kind, _, block = layer.partition(".")
    if kind in ("mlp", "resid") and block.lstrip("-").isdigit():
        if kind == "mlp":
            return mlp_neuron(model, int(block), i, position)
        return token_neuron(residual(model, int(block)), i, position)
    return token_neuron(layer, i, position)

