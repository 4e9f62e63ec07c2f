"""A faster inference copy of a model (eval mode, frozen weights): activations and input gradients
without BatchNorm and padding operators.

Three rewrites, each found with :func:`torch.fx.symbolic_trace` and each exact in arithmetic (in
float the folded weights round differently: on Lite0 the logit moves by 2e-6 relative and the input
gradient by 0.03-0.6 % depending on the input, about as much as a 1e-6 change of the input moves it;
tests/test_fold.py, results/bench_fold.md):

* an eval-mode ``BatchNorm2d`` is folded into the ``Conv2d`` that feeds it (new weights and bias;
  the BatchNorm becomes ``nn.Identity``);
* a zero-padding module (``ZeroPad2d``, ``ConstantPad2d(value=0)``) is folded into the padding of
  the convolution it feeds: symmetric padding directly; one pixel more on the right / bottom
  (TensorFlow's "same" padding at stride 2, as in EfficientNet) as one more pixel on the left /
  top and a leading zero row / column in the kernel (the same sums at the same positions);
* an activation module with an ``inplace`` switch (ReLU, ReLU6, Hardtanh, SiLU, ...) whose input
  has no other user and comes from a convolution, a BatchNorm or a sum (operations whose backward
  does not need their output) runs in place.

Only patterns whose producer has no other user and whose modules are called once are rewritten,
never a module whose own output is asked for (``keep``). Tracing and the rewrites happen on
deep copies (the user's model is never run or changed) and the rewritten copy is checked on a
probe batch against an untouched copy: it must give the same activations at the requested
layers, else the original model is used. Models fx cannot trace, models with hooks of their own
(a copy would call them too) and models with nothing to rewrite are used as they are. On EfficientNet-Lite0 (224², one CPU thread, batches of 4) a forward truncated
after ``_blocks.8`` runs about 1.7x faster (results/tcav/README.md).
"""
from __future__ import annotations

import copy
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import fx, nn

PADS = (nn.ZeroPad2d, nn.ConstantPad2d)
FOLDABLE = (nn.BatchNorm2d, *PADS)  # a model without any of these is not worth copying


@dataclass
class Plan:
    """Module names to rewrite: ``(conv, batchnorm)`` and ``(pad, conv)`` pairs, in-place activations."""
    batchnorms: list[tuple[str, str]] = field(default_factory=list)
    pads: list[tuple[str, str]] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.batchnorms or self.pads or self.inplace)


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries a hook."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or
               getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def _conv_of(node, modules: dict[str, nn.Module]) -> str | None:
    """The name of the ``nn.Conv2d`` that ``node`` applies (a call of the module, or ``F.conv2d``
    on that module's own weight, as custom convolution classes do), else None."""
    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_module" and type(modules.get(node.target)) is nn.Conv2d:
        return node.target
    if node.op == "call_function" and node.target is nn.functional.conv2d and len(node.args) > 1:
        w = node.args[1]
        if isinstance(w, fx.Node) and w.op == "get_attr" and str(w.target).endswith(".weight"):
            owner = str(w.target)[:-len(".weight")]
            if isinstance(modules.get(owner), nn.Conv2d):
                return owner
    return None


def _keeps_no_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is an operation whose backward does not need its own output (a
    convolution, a BatchNorm, a sum), so an in-place activation after it is safe under autograd too."""
    if _conv_of(node, modules):
        return True
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.BatchNorm2d)
    return (node.op == "call_function" and node.target in (operator.add, torch.add)) or \
        (node.op == "call_method" and node.target == "add")


def plan(model: nn.Module, keep: Iterable[str] = ()) -> Plan:
    """What :func:`fold` may rewrite in ``model`` (in eval mode), leaving the modules ``keep`` alone.
    Tracing runs ``model``'s forward on proxies, and a forward that changes the module's own state
    (a counter, a cache) would keep proxies there: trace a copy of a model you go on using."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 -- a model fx cannot trace is simply not rewritten
        return Plan()
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    calls.update(str(n.target)[:-len(".weight")] for n in graph.nodes
                 if n.op == "get_attr" and str(n.target).endswith(".weight"))
    keep, out, inplace = set(keep), Plan(), {}

    def once(*names) -> bool:
        return all(calls[n] == 1 and n not in keep for n in names)

    for node in graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        src = node.args[0] if node.args else None
        if isinstance(mod, nn.BatchNorm2d) and not mod.training and mod.running_mean is not None:
            conv = _conv_of(src, modules)
            if conv and len(src.users) == 1 and once(conv, node.target):
                out.batchnorms.append((conv, node.target))
        elif isinstance(mod, PADS) and getattr(mod, "value", 0) == 0 and len(node.users) == 1:
            l, r, t, b = mod.padding
            conv = _conv_of(next(iter(node.users)), modules)
            if conv and r - l in (0, 1) and b - t in (0, 1) and once(conv, node.target) \
                    and modules[conv].padding_mode == "zeros" and not isinstance(modules[conv].padding, str) \
                    and tuple(modules[conv].dilation) == (1, 1):
                out.pads.append((node.target, conv))
        elif mod is not None and getattr(mod, "inplace", None) is False and node.target not in keep:
            alone = isinstance(src, fx.Node) and len(src.users) == 1 and _keeps_no_output(src, modules)
            inplace[node.target] = inplace.get(node.target, True) and alone  # every call's input has no other user
    out.inplace = [name for name, ok in inplace.items() if ok]
    return out


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


@torch.no_grad()
def fold(model: nn.Module, what: Plan, inplace: bool = False) -> nn.Module:
    """``model`` with the rewrites of ``what`` (see :func:`plan`), weights frozen: a deep copy, or
    ``model`` itself when ``inplace`` (for a copy the caller made)."""
    out = model if inplace else copy.deepcopy(model)
    for conv_name, bn_name in what.batchnorms:
        conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        bias = (bias - bn.running_mean) * scale + (bn.bias if bn.bias is not None else 0)
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
        _replace(out, bn_name, nn.Identity())
    for pad_name, conv_name in what.pads:
        conv, (l, r, t, b) = out.get_submodule(conv_name), out.get_submodule(pad_name).padding
        if (r, b) != (l, t):  # a leading zero column / row: the extra left / top pixel meets it
            conv.weight = nn.Parameter(nn.functional.pad(conv.weight, (r - l, 0, b - t, 0)))
        conv.padding = (conv.padding[0] + b, conv.padding[1] + r)
        _replace(out, pad_name, nn.Identity())
    for name in what.inplace:
        out.get_submodule(name).inplace = True
    out.requires_grad_(False)
    return out
