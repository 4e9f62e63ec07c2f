"""Scoped hooks: truncated forward, in-place safety, tuple/dict outputs, repeated calls."""
import pytest
import torch
from torch import nn

import fvis
import objectives as obj
from fvis.errors import FvisError
from fvis.hooks import Capture, frozen, output_shapes


def test_truncated_forward_matches_full_forward_and_stops_early(lite0):
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    layers = ["_blocks.2", "_blocks.4._bn1"]
    with frozen(lite0):
        with Capture(lite0, layers, truncate=False) as cap:
            cap.plan(x)
            full = cap.forward(x)
        ran_after = []
        spy = lite0.net._blocks[5].register_forward_hook(lambda *a: ran_after.append(1))
        try:
            with Capture(lite0, layers) as cap:
                cap.plan(x)
                assert cap.truncated
                ran_after.clear()
                part = cap.forward(x)
        finally:
            spy.remove()
    assert ran_after == []  # nothing after _blocks.4._bn1 ran
    assert part.output is None and full.output is not None
    for name in layers:
        assert torch.equal(part[name], full[name])


def test_truncated_forward_gives_same_gradients(lite0):
    x0 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    grads = []
    for truncate in (False, True):
        x = x0.clone().requires_grad_()
        with frozen(lite0), Capture(lite0, ["_blocks.3"], truncate=truncate) as cap:
            cap.plan(x0)
            cap.forward(x)["_blocks.3"][:, 4].mean().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1])


class Toy(nn.Module):
    """Conv -> in-place ReLU; a tuple-returning and a dict-returning module; a module called twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pair = Pair()
        self.named = Named()
        self.shared = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.conv(x))
        a, b = self.pair(x)
        x = self.named(a + b)["features"]
        x = self.shared(self.shared(x))
        return self.head(x.mean((2, 3)))


class Pair(nn.Module):
    def forward(self, x):
        return x * 2, x * 3


class Named(nn.Module):
    def forward(self, x):
        return {"features": x + 1, "scale": x.mean()}


def test_inplace_tuple_dict_and_repeated_calls():
    torch.manual_seed(0)
    toy = Toy()
    x = torch.randn(2, 3, 8, 8)
    with Capture(toy, ["conv", "pair[1]", "named[features]", "shared"], truncate=False) as cap:
        cap.plan(x)
        acts = cap.forward(x)
        layout = torch.channels_last if cap.channels_last else torch.contiguous_format
    conv = toy.conv(x.contiguous(memory_format=layout))  # the reference sees the layout the model was fed
    assert (conv < 0).any()
    assert torch.equal(acts["conv"], conv)  # captured before the in-place ReLU changed it
    relu = conv.clamp_min(0)
    assert torch.equal(acts["pair"], relu * 2) and torch.equal(acts["pair[1]"], relu * 3)
    assert torch.allclose(acts["named"], relu * 5 + 1) and torch.equal(acts["named[features]"], acts["named"])
    calls = acts.calls("shared")
    assert len(calls) == 2
    assert torch.equal(acts["shared"], calls[1]) and torch.allclose(calls[1], toy.shared(calls[0]))
    with pytest.raises(FvisError, match=r"no element \[7\]"):
        acts["pair[7]"]


def test_repeated_module_is_not_truncated_before_its_last_call(lite0):
    # _blocks.1._swish runs twice per forward; truncation must wait for the second call
    x = torch.rand(1, 3, 64, 64)
    with frozen(lite0), Capture(lite0, ["_blocks.1._swish"]) as cap:
        cap.plan(x)
        acts = cap.forward(x)
    assert len(acts.calls("_blocks.1._swish")) == 2
    assert acts["_blocks.1._swish"].shape[1] == 96


def test_unknown_layer_suggests_close_names(lite0):
    with pytest.raises(FvisError, match=r"unknown layer 'blocks.3'.*_blocks.3"):
        Capture(lite0, ["blocks.3"])
    with pytest.raises(FvisError, match=r"_conv_head"):
        Capture(lite0, ["_conv_haed"])


def test_only_needed_layers_are_hooked(lite0):
    with Capture(lite0, ["_blocks.2", "output"]):
        hooked = {n for n, m in lite0.net.named_modules() if m._forward_hooks}
    assert hooked == {"_blocks.2"}
    assert not any(m._forward_hooks for m in lite0.modules())


def test_output_shapes_lists_every_module(lite0):
    rows = output_shapes(lite0, torch.rand(1, 3, 224, 224))
    table = {name: (kind, shape, calls) for name, kind, shape, calls in rows}
    assert table["_conv_stem"] == ("Conv2dStaticSamePadding", (1, 32, 112, 112), 1)
    assert table["_fc"] == ("Linear", (1, 1000), 1)
    assert table["_blocks"] == ("ModuleList", None, 0)  # a ModuleList is never called
    assert table["_blocks.1._swish"][2] == 2  # ReLU6 shared inside the block
    assert table["output"] == ("model output", (1, 1000), 1)
    assert len(rows) == len([n for n, _ in lite0.net.named_modules() if n]) + 1


class FlattenByView(nn.Module):
    """Flattens its feature map with ``.view``, which a channels-last feature map cannot take."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        f = self.conv(x)
        return self.head(f.view(f.shape[0], -1))


def test_cpu_image_input_goes_channels_last_with_same_values_and_gradients(lite0):
    x0 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    layouts, runs = [], {}
    spy = lite0.net.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        for channels_last in (None, False):
            x = x0.clone().requires_grad_()
            with frozen(lite0), Capture(lite0, ["_blocks.3"], channels_last=channels_last) as cap:
                cap.plan(x0)
                act = cap.forward(x)["_blocks.3"]
                act[:, 5].mean().backward()
            runs[channels_last] = (cap.channels_last, act.detach(), x.grad)
    finally:
        spy.remove()
    assert layouts == [True, True, False, False]  # auto on the CPU: channels-last (plan, then the step)
    assert runs[None][0] is True and runs[False][0] is False
    assert torch.allclose(runs[None][1], runs[False][1], atol=1e-4, rtol=1e-4)
    assert torch.allclose(runs[None][2], runs[False][2], atol=1e-6, rtol=1e-3)
    assert x0.is_contiguous() and all(p.is_contiguous() for p in lite0.parameters())  # only the input's copy changed


def test_channels_last_falls_back_for_models_that_cannot_take_it():
    torch.manual_seed(0)
    toy, x = FlattenByView(), torch.rand(2, 3, 8, 8)
    with Capture(toy, ["conv", "output"]) as cap:
        cap.plan(x)
        assert cap.channels_last is False  # tried, failed in .view, plain layout kept
        assert torch.equal(cap.forward(x).output, toy(x))
    with pytest.raises(RuntimeError, match="view"), Capture(toy, ["conv"], channels_last=True) as cap:
        cap.plan(x)  # asked for explicitly: the model's own error
    result = fvis.optimize(toy, obj.channel("conv", 1), fvis.PixelImage(8, batch=2), steps=3, progress=False)
    assert result.steps == 3 and result.values.shape == (2,) and result.stopped is None
