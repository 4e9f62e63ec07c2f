"""Scoped activation capture: hook only the layers asked for, stop the forward early.

``Capture`` registers forward hooks on exactly the named modules and removes them
on exit (also on errors and KeyboardInterrupt); the user's own hooks are never
touched. After :meth:`Capture.plan` has run one dry forward, every later forward
stops as soon as the last needed module call has fired (a truncated forward), so
an early layer does not pay for the rest of the network. On the CPU, image batches
go in channels-last layout (oneDNN's faster convolutions) unless the model cannot
take it.
"""
from __future__ import annotations

import contextlib
import copy
import re
from functools import partial
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from . import fold
from .errors import FvisError, suggest
from .execution import autocast, check_precision, compiled

OUTPUT = "output"  # alias for the model's output
_SELECTOR = re.compile(r"^(?P<base>.*?)(?:\[(?P<key>[^\[\]]+)\])?$")


class _StopForward(BaseException):
    """Raised by the last needed hook; BaseException so model code's `except Exception` cannot eat it."""


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layer names as the user knows them: ``named_modules()`` of the wrapped network."""
    net = model.net if getattr(model, "fvis_wrapper", False) else model
    return {name: m for name, m in net.named_modules() if name}


def split_selector(name: str) -> tuple[str, str | int | None]:
    """``"blocks.3[0]" -> ("blocks.3", 0)``; ``"attn[hidden]" -> ("attn", "hidden")``."""
    m = _SELECTOR.match(name.strip())
    key = m.group("key")
    if key is not None and key.lstrip("-").isdigit():
        key = int(key)
    return m.group("base"), key


def resolve_layers(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module | None]:
    """Map each base layer name to its module (``None`` for the output alias); unknown names fail."""
    layers = named_layers(model)
    out: dict[str, nn.Module | None] = {}
    for name in names:
        base, _ = split_selector(name)
        if base == OUTPUT:
            out[base] = None
        elif base in layers:
            out[base] = layers[base]
        else:
            raise FvisError(f"unknown layer {base!r}.{suggest(base, list(layers) + [OUTPUT])} "
                            f"(`fvis layers MODEL` lists them)")
    return out


def first_tensor(value: Any) -> torch.Tensor:
    """The tensor a layer name stands for when its module returns a tuple/list/dict."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for v in items:
        if isinstance(v, torch.Tensor):
            return v
    raise FvisError(f"layer output of type {type(value).__name__} holds no tensor")


def _select(value: Any, key: str | int | None, name: str) -> torch.Tensor:
    if key is None:
        return first_tensor(value)
    try:
        return first_tensor(value[key] if not isinstance(key, str) or isinstance(value, dict) else getattr(value, key))
    except (KeyError, IndexError, AttributeError, TypeError):
        raise FvisError(f"layer {name!r}: output of type {type(value).__name__} has no element [{key}]") from None


def _protect(value: Any, dtype: torch.dtype | None = None) -> Any:
    """Clone tensors so later in-place ops (e.g. ``ReLU(inplace=True)``) cannot change what we captured;
    ``dtype``: floating-point tensors are copied in that type (bf16 runs: objectives compute in float32)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype, copy=True) if dtype is not None and value.is_floating_point() else value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_protect(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_protect(v, dtype) for v in value)
    if isinstance(value, dict):
        out = value.copy()
        for k, v in value.items():
            out[k] = _protect(v, dtype)
        return out
    return value


class Activations:
    """What one forward captured: ``acts["layer"]``, ``acts["layer[0]"]``, ``acts["output"]``.

    A module called several times in one forward maps to its *last* call;
    :meth:`calls` returns every call in order.

    ``batch`` is the number of items in this forward; when a transform replicated each item
    into ``copies`` transformed copies (expectation over transformations), tensors hold
    ``batch * copies`` rows, item-major, and objectives average each item's copies.
    ``items``: ``None`` when the forward holds every optimized item, else the ``(batch,)``
    positions of its items in the full batch of ``total`` items (the engine skips finished
    items); per-item constants (class ids, masks) are picked with :meth:`rows`.
    """

    def __init__(self, store: dict[str, list], output: Any, batch: int, copies: int = 1,
                 items: torch.Tensor | None = None, total: int | None = None):
        self._store, self.output, self.batch, self.copies = store, output, batch, copies
        self.items, self.total = items, batch if items is None else total

    def of(self, positions: torch.Tensor, total: int) -> "Activations":
        """These activations as those of the items at ``positions`` in a full batch of ``total``."""
        self.items, self.total = positions, total
        return self

    def rows(self, per_item: torch.Tensor) -> torch.Tensor:
        """The entries of a full-batch, per-item tensor ``(B_all, ...)`` for this forward's items."""
        return per_item if self.items is None else per_item[self.items.to(per_item.device)]

    def __getitem__(self, name: str) -> torch.Tensor:
        base, key = split_selector(name)
        return _select(self._raw(base), key, name)

    def calls(self, name: str) -> list[torch.Tensor]:
        base, key = split_selector(name)
        return [_select(v, key, name) for v in self._store.get(base, [])]

    def _raw(self, base: str) -> Any:
        if base == OUTPUT:
            if self.output is None:
                raise FvisError("the model output was not computed (truncated forward)")
            return self.output
        if not self._store.get(base):
            raise FvisError(f"layer {base!r} did not run in the forward pass")
        return self._store[base][-1]


class Capture:
    """Hook exactly ``layers`` of ``model`` while in the ``with`` block.

    >>> with Capture(model, ["blocks.3"]) as cap:
    ...     cap.plan(x)             # one dry forward: validates, counts calls
    ...     acts = cap.forward(x)   # stops right after blocks.3 has fired
    ...     acts["blocks.3"].shape

    ``channels_last``: feed 4-D inputs in channels-last layout. ``None`` (auto): decided by
    :meth:`plan`, on for a CPU image batch (usually faster there; measured per architecture in
    ``results/bench_layout.md``) and off again if the model fails on it
    (e.g. a ``.view`` of a feature map). Only the input's layout changes, never the model.
    Without ``plan()``, ``forward()`` feeds NCHW unless ``channels_last=True``. Not caught: a
    model that fails only in backward on channels-last gradients, or silently assumes NCHW
    strides (``data_ptr`` arithmetic); pass ``channels_last=False`` for those.

    ``precision``: ``"bf16"`` runs the forward under ``torch.autocast`` (bfloat16; captured
    activations and the output come back as float32); ``compile``: the forward (and so its
    backward) through ``torch.compile`` (:mod:`fvis.execution`), without truncation (a compiled
    graph runs whole). Both off by default. ``fold``: :meth:`plan` swaps in a checked inference
    copy of an image model (:func:`inference_copy`: BatchNorm and padding folded into
    convolutions, activations in place; the model itself is not changed); off by default
    (``CaptureOptions(fold=True)`` / ``fvis render --fold``).

    ``grad_filters``: ``{layer: f}`` (plain module names, hooked too): in every forward with gradients,
    the gradient flowing back through that module's tensor output ``a`` becomes ``f(a, grad)``
    (``a`` as captured, detached), so it changes what reaches the input through the model, not only
    what reaches the captured copy (e.g. :class:`regularizers.RelevanceFilter`).
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], truncate: bool = True,
                 channels_last: bool | None = None, precision: str = "fp32", compile: bool = False,
                 fold: bool = False, grad_filters: dict | None = None):
        self.model = model
        self._filters = dict(grad_filters or {})
        for name in self._filters:
            if name == OUTPUT or split_selector(name)[1] is not None:
                raise FvisError(f"gradient filter on {name!r}: name a module (its own tensor output is filtered), "
                                f"not {'the model output' if name == OUTPUT else 'an element of an output'}")
        self._names = set(layers) | set(self._filters)
        self.modules = resolve_layers(model, self._names)
        self.fold = fold and not compile
        self.truncate = truncate and not compile
        self.precision = check_precision(precision)
        self._dtype = None if precision == "fp32" else torch.float32  # captured values come back in float32
        self._run = compiled(model) if compile else model
        self._layout_request = channels_last  # the caller's choice; None: plan() decides
        self.channels_last = bool(channels_last)  # the layout forward() uses
        self._handles: list = []
        self._store: dict[str, list] = {}
        self._calls_needed: int | None = None  # set by plan()
        self._calls_seen = 0

    @property
    def truncated(self) -> bool:
        return self._calls_needed is not None

    def __enter__(self) -> "Capture":
        try:
            for name, module in self.modules.items():
                if module is not None:
                    hook = partial(self._hook, name)
                    if self._run is not self.model:  # compiled: the hook runs eagerly between compiled graphs
                        hook = torch.compiler.disable(hook)
                    self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        kept = _protect(output, self._dtype)
        self._store.setdefault(name, []).append(kept)
        gradient_filter = self._filters.get(name)
        if gradient_filter is not None and isinstance(output, torch.Tensor) and output.requires_grad:
            seen = kept.detach()  # a copy: later in-place ops on the output cannot change it
            output.register_hook(lambda grad: gradient_filter(seen, grad).to(grad.dtype))
        self._calls_seen += 1
        if self._calls_seen == self._calls_needed:
            raise _StopForward

    def forward(self, x: Any, items: int | None = None) -> Activations:
        """Run the model on ``x`` and return what the hooked layers produced. ``items``: the number
        of optimized items when ``x`` holds several transformed copies of each (default: all rows)."""
        rows = _batch_size(x)
        items = items or rows
        if rows % items:
            raise FvisError(f"model input has {rows} rows, not a multiple of the {items} items")
        self._store, self._calls_seen = {}, 0
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # a copy in the autograd graph
        try:
            with autocast(_device_of(x), self.precision):
                output = self._run(x)
        except _StopForward:
            output = None
        if self._dtype is not None and output is not None:
            output = _protect(output, self._dtype)
        return Activations(self._store, output, items, rows // items)

    def plan(self, x: Any, items: int | None = None) -> Activations:
        """One dry forward without gradients: counts the needed calls, enables truncation and
        settles the input layout."""
        self._calls_needed = None
        if self.fold and isinstance(x, torch.Tensor) and x.dim() == 4 and self._run is self.model:
            self.close()  # the copy is made and checked with no hooks of ours on the model
            run = inference_copy(self.model, self._names, x)
            if run is not self.model:
                self._run, self.modules = run, resolve_layers(run, self._names)
            self.__enter__()
        auto = self._layout_request is None
        self.channels_last = (isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu") if auto \
            else self._layout_request
        with torch.no_grad():
            acts = None
            try:
                acts = self.forward(x, items)
            except FvisError:
                raise
            except Exception:
                if not (auto and self.channels_last):
                    raise
            if acts is None:  # the model failed on channels-last input: plain layout (its own error if that fails too)
                self.channels_last = False
                acts = self.forward(x, items)
        needs_output = any(m is None for m in self.modules.values())
        if self.truncate and not needs_output and self._calls_seen > 0:
            self._calls_needed = self._calls_seen
        return acts


def _device_of(x: Any) -> torch.device:
    return (x if isinstance(x, torch.Tensor) else first_tensor(x)).device


def _batch_size(x: Any) -> int:
    return first_tensor(x).shape[0] if not isinstance(x, torch.Tensor) else x.shape[0]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` inside; every module's mode and every flag restored after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(b.float(), a.float(), rtol=1e-3,
                                                      atol=1e-4 * float(a.abs().max()) + 1e-6))


@torch.no_grad()
def inference_copy(model: nn.Module, layers: Iterable[str], probe: torch.Tensor) -> nn.Module:
    """``model`` rewritten for activations at ``layers`` and gradients with respect to its input
    (:mod:`fvis.fold`), or ``model`` itself when nothing can be rewritten, the model carries hooks,
    or the copy disagrees with an untouched copy on ``probe``. ``model`` itself is never run (its
    forward might count calls or cache). Call it with ``model`` in eval mode (:func:`frozen`)."""
    layers = list(layers)
    if fold.has_hooks(model) or not any(isinstance(m, fold.FOLDABLE) for m in model.modules()):
        return model  # nothing worth two copies (a model without BatchNorm or padding modules)
    hooked = resolve_layers(model, layers).values()  # the modules whose own outputs are asked for stay
    keep = {n for n, m in model.named_modules() if any(m is h for h in hooked)}
    try:
        what = fold.plan(copy.deepcopy(model), keep)  # tracing runs the forward: on a copy
        if not what:
            return model
        out = copy.deepcopy(model)
        with Capture(out, layers) as cap:
            want = cap.forward(probe)
        fold.fold(out, what, inplace=True)
        with Capture(out, layers) as cap:
            got = cap.forward(probe)
        return out if all(_same(want[l], got[l]) for l in layers) else model
    except Exception:  # noqa: BLE001 -- a model that cannot be copied, or a copy that cannot run, is used as it is
        return model


@contextlib.contextmanager
def capturing(model: nn.Module, layers: Iterable[str], **options) -> Iterator[Capture]:
    """``with frozen(model), Capture(model, layers, **options) as cap``: the one way fvis runs a
    model for activations (eval mode, no weight gradients, scoped hooks; all restored after)."""
    with frozen(model), Capture(model, layers, **options) as cap:
        yield cap


def grey_activations(model: nn.Module, layers: Iterable[str], size=None) -> Activations:
    """Activations of ``layers`` for one mid-grey image at ``size`` ``(H, W)`` (default: the model's
    ``input_size``): the dry forward that checks layers, channels and shapes before long work."""
    h, w = size or model.input_size
    x = torch.full((1, getattr(model, "channels", 3), h, w), 0.5, device=next(model.parameters()).device)
    with capturing(model, layers) as cap:
        return cap.plan(x)


def output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, Any, int]]:
    """``(name, type, output shape or None, calls)`` for every module from one dry forward
    (shape of the last call), then ``("output", "model output", shape, 1)``."""
    layers = named_layers(model)
    with capturing(model, layers, truncate=False) as cap:
        acts = cap.plan(x)
    rows = []
    for name, module in layers.items():
        calls = acts._store.get(name, [])
        rows.append((name, type(module).__name__, _shape_of(calls[-1]) if calls else None, len(calls)))
    rows.append((OUTPUT, "model output", _shape_of(acts.output), 1))
    return rows


def _shape_of(value: Any):
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, dict):
        return {k: _shape_of(v) for k, v in value.items() if isinstance(v, (torch.Tensor, tuple, list, dict))}
    if isinstance(value, (tuple, list)):
        return [_shape_of(v) for v in value]
    return None
