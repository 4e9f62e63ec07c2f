"""Relevance-filtered gradients (issue 17, VITAL's relevant information flow): the filter at a layer of
real Lite0 equals plain autograd through that layer with the irrelevant channels held constant, keeps
every channel at keep=1, leaves the model as it found it, and reaches prototypes from recipe and CLI."""
import json
import subprocess
import sys

import pytest
import torch

import objectives as obj
import regularizers as reg
from fvis.engine import optimize
from fvis.errors import FvisError
from fvis.hooks import capturing, resolve_layers
from fvis.param import PixelImage
from fvis.prototype import make_prototypes
from fvis.recipes import Recipe

LAYER = "_blocks.10"


def _input_grad(model, x, objective, grad_filters=None, forward_hook=None):
    x = x.clone().requires_grad_(True)
    handle = resolve_layers(model, [LAYER])[LAYER].register_forward_hook(forward_hook) if forward_hook else None
    try:
        with capturing(model, objective.layers, grad_filters=grad_filters) as cap:
            (-objective(cap.forward(x)).sum()).backward()
    finally:
        if handle is not None:
            handle.remove()
    return x.grad


def test_the_filter_is_autograd_through_the_relevant_channels_only(lite0):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 96)
    objective = obj.class_logits([94, 291], score="log_odds")
    keep = reg.RelevanceFilter([LAYER], keep=0.25)
    filtered = _input_grad(lite0, x, objective, keep.gradient_filters())

    # the reference, by plain autograd: the loss's gradient at the layer gives each channel's relevance ...
    seen = {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        seen["a"] = output

    _input_grad(lite0, x, objective, forward_hook=keep_output)
    a = seen["a"]
    relevance = -(a.detach() * a.grad).sum((2, 3))
    mask = torch.zeros_like(relevance)
    for row, order in enumerate(relevance.argsort(1, descending=True)):
        mask[row, order[:28]] = 1  # ceil(0.25 * 112) channels
    assert torch.equal(reg.relevant_channels(reg.channel_relevance(a.detach(), a.grad), 0.25), mask)
    # ... and the input's gradient when the other channels are held constant in the forward
    mask = mask[:, :, None, None]
    reference = _input_grad(lite0, x, objective, forward_hook=lambda m, i, o: o * mask + (o * (1 - mask)).detach())
    plain = _input_grad(lite0, x, objective)
    assert torch.allclose(filtered, reference, rtol=1e-5, atol=1e-7 * float(reference.abs().max()))
    assert not torch.allclose(filtered, plain, atol=0.1 * float(plain.abs().max()))  # it did filter
    # keep=1: the gradient as it was
    assert torch.equal(_input_grad(lite0, x, objective, reg.RelevanceFilter([LAYER], keep=1.0).gradient_filters()),
                       plain)


class _Toy(torch.nn.Module):
    """A hooked conv followed by an in-place ReLU, and one module called twice in a forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.ReLU(inplace=True)
        self.shared = torch.nn.Conv2d(8, 8, 1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        h = self.act(self.conv(x))  # in place, right after the hooked output
        h = self.shared(torch.relu(self.shared(h)))  # two calls: a filter per call, each with its own activation
        return self.head(h.mean((2, 3)))


def _toy_grad(model, x, grad_filters=None, masks=None, outputs=None, at="shared"):
    """The input's gradient; ``masks``: {call: mask} holds the other channels of that call of ``at`` constant
    (plain autograd, the reference); ``outputs``: gets each call's output, its gradient retained."""
    x = x.clone().requires_grad_(True)
    calls = []

    def hook(module, inputs, output):
        calls.append(output)
        k = (masks or {}).get(len(calls) - 1)
        if outputs is not None:
            output.retain_grad()
            outputs.append(output)
        return None if k is None else output * k + (output * (1 - k)).detach()

    handle = getattr(model, at).register_forward_hook(hook)
    try:
        with capturing(model, ["output"], grad_filters=grad_filters) as cap:
            (-obj.class_logits([1, 2])(cap.forward(x)).sum()).backward()
    finally:
        handle.remove()
    return x.grad


def _mask(output):
    return reg.relevant_channels(reg.channel_relevance(output.detach(), output.grad), 0.5)[:, :, None, None]


def test_the_filter_holds_after_in_place_ops_and_on_every_call_of_a_module():
    model, x = _Toy(), torch.rand(2, 3, 12, 12)
    filtered = _toy_grad(model, x, reg.RelevanceFilter(["shared"], 0.5).gradient_filters())
    # the reference by plain autograd: the later call's mask from the plain gradient, then the earlier call's
    # from the gradient that reaches it through the masked later call, then both masks held in the forward
    out = []
    plain = _toy_grad(model, x, outputs=out)
    later = _mask(out[1])
    out = []
    _toy_grad(model, x, masks={1: later}, outputs=out)
    earlier = _mask(out[0])
    assert not torch.equal(earlier, later)
    assert torch.allclose(filtered, _toy_grad(model, x, masks={0: earlier, 1: later}), rtol=1e-5, atol=1e-9)
    assert not torch.allclose(filtered, plain, rtol=1e-2, atol=1e-9)
    # an in-place ReLU right after the filtered conv: the filter sees the conv's own output, as the same model
    # without the in-place op does by plain autograd
    filtered = _toy_grad(model, x, reg.RelevanceFilter(["conv"], 0.5).gradient_filters())
    copy = _Toy()
    copy.load_state_dict(model.state_dict())
    copy.act.inplace = False
    out = []
    _toy_grad(copy, x, outputs=out, at="conv")
    reference = _toy_grad(copy, x, masks={0: _mask(out[0])}, at="conv")
    assert torch.allclose(filtered, reference, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(filtered, plain, rtol=1e-2, atol=1e-9)


def test_filters_name_modules_once_and_clearly():
    model = _Toy()
    for bad in ("output", "conv[0]"):
        with pytest.raises(FvisError, match="gradient filter on"):
            with capturing(model, ["output"], grad_filters={bad: lambda a, g: g}):
                pass
    two = [reg.RelevanceFilter(["conv"], 0.5), reg.RelevanceFilter(["conv"], 0.25)]
    with pytest.raises(FvisError, match="two regularizers filter the gradient at 'conv'"):
        optimize(model, obj.class_logits([1]), PixelImage(12, batch=1), two, steps=1, progress=False)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert reg.relevant_channels(torch.arange(100.0)[None], 0.07).sum() == 7  # a share, not one more


def test_the_filter_leaves_the_model_as_found_also_on_errors(lite0):
    def hooks():
        return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in lite0.modules())

    before, flags = hooks(), [p.requires_grad for p in lite0.parameters()]
    param = PixelImage(64, batch=1)
    result = optimize(lite0, obj.class_logits([94]), param, [reg.RelevanceFilter([LAYER, "_blocks.14"], 0.5)],
                      steps=3, progress=False)
    assert result.steps == 3 and hooks() == before and lite0.training is False
    assert [p.requires_grad for p in lite0.parameters()] == flags

    class Broken(reg.RelevanceFilter):
        def filter(self, activation, grad):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        optimize(lite0, obj.class_logits([94]), param, [Broken([LAYER], 0.5)], steps=2, progress=False)
    assert hooks() == before and lite0.training is False
    assert [p.requires_grad for p in lite0.parameters()] == flags


def test_relevance_settings_are_checked_and_reach_the_prototype(lite0):
    for bad, message in [({"relevance": 1.5}, "relevance must be a share"),
                         ({"relevance_layers": "every"}, "relevance_layers must be last | blocks | matched"),
                         ({"relevance_layers": ()}, "at least one layer"),
                         ({"match_layers": ()}, "match_layers must be at least one layer")]:
        with pytest.raises(FvisError, match=message):
            Recipe("x").replace(**bad)
    with pytest.raises(FvisError, match="keep must be a share"):
        reg.RelevanceFilter([LAYER], keep=0)
    from fvis.prototype import match_layer_names, relevance_layer_names

    on = Recipe("x", relevance=0.3)
    assert relevance_layer_names(lite0, on) == ["_blocks.15"]  # last: the last block's output, the default
    assert relevance_layer_names(lite0, on.replace(relevance_layers="blocks")) == [f"_blocks.{i}" for i in range(16)]
    assert relevance_layer_names(lite0, on.replace(relevance_layers="matched")) == match_layer_names(lite0, on)
    assert Recipe("x").without_effect({"relevance_layers": "matched"})
    assert not Recipe("x", relevance=0.3).without_effect({"relevance_layers": "matched"})

    run = lambda **kw: make_prototypes(lite0, [94], recipe="robust", steps=3, size=64, heldout=0,  # noqa: E731
                                       progress=False, **kw)[0]
    plain, filtered = run(), run(relevance=0.25, relevance_layers=[LAYER])
    assert filtered.settings["relevance"] == 0.25 and filtered.settings["relevance_layers"] == [LAYER]
    assert not torch.allclose(plain.image, filtered.image, atol=1e-4)
    assert torch.equal(run(relevance=1.0).image, plain.image)  # every channel kept: the same image


def test_cli_relevance_flags(tmp_path):
    cmd = [sys.executable, "-m", "fvis", "prototype", "--model", "efficientnet-lite0", "--classes", "94",
           "--steps", "2", "--size", "64", "--heldout", "0", "--quiet"]
    ok = subprocess.run([*cmd, "--relevance", "0.3", "--relevance-layers", "_blocks.10,_blocks.14",
                         "--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    settings = json.loads((tmp_path / "ok" / "94_hummingbird.json").read_text())["settings"]
    assert settings["relevance"] == 0.3 and settings["relevance_layers"] == ["_blocks.10", "_blocks.14"]
    bad = subprocess.run([*cmd, "--relevance", "0.3", "--relevance-layers", "_blocks.99", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("fvis: error: unknown layer '_blocks.99'")
    assert not (tmp_path / "b" / "94_hummingbird.png").exists()


def test_help_texts_give_each_recipes_own_values_from_the_recipes_themselves(monkeypatch):
    from fvis.commands import prototype as command
    from fvis.recipes import RECIPES

    assert command.recipe_values("decay_power") == "cosine, colour-shift: 1.25; others: 1"
    assert command.recipe_values("relevance") == "every recipe: 0"
    assert command.recipe_values("lr_schedule") == "deepinversion, cosine, colour-shift: 'cosine'; others: 'constant'"  # value, not recipe
    groups = dict(part.rsplit(": ", 1)[::-1] for part in command.recipe_values("jitter").split("; "))
    assert groups == {"8": "lucent, bn-item, deepinversion, vital, accentuate", "16": "others"}
    # a new recipe shows up in the help without anyone editing it
    monkeypatch.setitem(RECIPES, "wide", Recipe("wide", jitter=24, scale_range=(0.5, 1.5)))
    assert command.recipe_values("jitter").startswith("wide: 24; ")
    assert "wide: 0.5,1.5" in command.recipe_values("scale_range")
