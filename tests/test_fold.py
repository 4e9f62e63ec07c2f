"""fvis.fold: the inference copy gives the original's activations, folds what it should and
nothing else, and never changes the user's model."""
import pytest
import torch
from torch import nn

import fvis
from fvis import fold as F
from fvis.features.activations import compute_activations
from fvis.hooks import frozen, inference_copy


def _images(n, size=224, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lite0_copy_folds_everything_and_matches(lite0):
    before = _state(lite0)
    with frozen(lite0):
        what = F.plan(lite0)
        copy = inference_copy(lite0, ["_blocks.8", "_blocks.15"], _images(2))
    # Lite0: 49 conv+BN pairs, 17 "same" pads (12 symmetric, 5 one pixel more right / below), in place: the 17 ReLU6 (not the head's Dropout: its input comes from a pooling)
    assert (len(what.batchnorms), len(what.pads), len(what.inplace)) == (49, 17, 17)
    assert copy is not lite0
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ZeroPad2d)) for m in copy.modules())
    x = _images(3, seed=1)
    for layer in ["_blocks.1", "_blocks.8", "output"]:
        a = compute_activations(lite0, x, [layer], batch_size=1, fold=False)[layer]
        b = compute_activations(lite0, x, [layer], batch_size=1, fold=True)[layer]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), layer
    after = lite0.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the user's model untouched
    assert not F.has_hooks(lite0) and not any(isinstance(m, nn.Identity) and n.endswith("_bn0")
                                              for n, m in lite0.named_modules())


@pytest.mark.parametrize("pad,kernel,stride", [((1, 1, 1, 1), 3, 1), ((0, 1, 0, 1), 3, 2), ((1, 2, 1, 2), 5, 2),
                                               ((2, 2, 0, 1), 3, 2), ((0, 1, 0, 1), 3, 1)])
def test_pad_and_batchnorm_fold_exactly(pad, kernel, stride):
    torch.manual_seed(0)
    net = nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(3, 5, kernel, stride=stride, bias=False), nn.BatchNorm2d(5),
                        nn.ReLU6(), nn.Conv2d(5, 2, 1)).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        net[2].running_mean.uniform_(-1, 1), net[2].running_var.uniform_(0.5, 2)
        net[2].weight.uniform_(0.5, 1.5), net[2].bias.uniform_(-1, 1)
    what = F.plan(net)
    assert what.batchnorms == [("1", "2")] and what.pads == [("0", "1")] and what.inplace == ["3"]
    copy = F.fold(net, what)
    x = torch.rand(2, 3, 17, 18)
    with torch.no_grad():
        assert torch.allclose(copy(x), net(x), atol=1e-5)
    assert isinstance(net[0], nn.ZeroPad2d) and isinstance(net[2], nn.BatchNorm2d)  # the original is unchanged


def test_what_must_not_fold_does_not():
    class Residual(nn.Module):  # the convolution's output also feeds the sum: its BatchNorm stays
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()
            self.pad, self.conv2 = nn.ZeroPad2d((2, 0, 0, 0)), nn.Conv2d(3, 3, 3)  # two more on the left: no fold

        def forward(self, x):
            y = self.conv(x)
            s = self.bn(y) + y
            z = self.act(s)  # its input is used again below: not in place
            return self.conv2(self.pad(z)) + s.mean()

    net = Residual().eval()
    what = F.plan(net)
    assert what.batchnorms == [] and what.pads == [] and what.inplace == []
    # a layer whose own output is asked for keeps its module
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    assert F.plan(seq).batchnorms == [("0", "1")]
    assert F.plan(seq, keep={"1"}).batchnorms == [] and F.plan(seq, keep={"0"}).batchnorms == []


def test_untraceable_hooked_or_wrong_copies_fall_back(monkeypatch):
    class Branchy(nn.Module):  # data-dependent control flow: fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    x = torch.rand(2, 3, 8, 8)
    branchy = Branchy().eval()
    assert not F.plan(branchy)
    assert inference_copy(branchy, ["bn"], x) is branchy

    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    handle = seq[0].register_forward_hook(lambda *a: None)  # the user's own hook: a copy would call it too
    assert inference_copy(seq, ["3"], x) is seq
    handle.remove()
    assert inference_copy(seq, ["3"], x) is not seq

    real_fold = F.fold

    def wrong(model, what, inplace=False):  # a rewrite that changes the result must be caught by the probe check
        out = real_fold(model, what, inplace)
        with torch.no_grad():
            out[3].bias.add_(1.0)
        return out

    monkeypatch.setattr(F, "fold", wrong)  # fvis.hooks calls fold.fold
    assert inference_copy(seq, ["3"], x) is seq
    monkeypatch.setattr(F, "fold", real_fold)

    import threading
    seq.lock = threading.Lock()  # a model that cannot be deep-copied runs as it is
    assert inference_copy(seq, ["3"], x) is seq
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    assert inference_copy(plain, ["2"], x) is plain  # no BatchNorm, no padding module: no copy


def test_tiny_models_and_small_batches_run_the_model_itself(monkeypatch):
    calls = []
    monkeypatch.setattr("fvis.hooks.inference_copy", lambda m, l, p: calls.append(1) or m)
    net = fvis.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)),
                    mean=None, std=None, input_size=8)
    net(torch.rand(1, 3, 8, 8))  # materialize the lazy layer
    compute_activations(net, torch.rand(4, 3, 8, 8), ["2"], batch_size=4)  # one batch: no copy worth making
    assert calls == []
    compute_activations(net, torch.rand(5, 3, 8, 8), ["2"], batch_size=4)
    assert calls == [1]


def test_the_users_model_is_never_run_or_traced():
    class Counting(nn.Sequential):  # a forward with side effects on the module (tracing would leave a proxy here)
        calls = 0

        def forward(self, x):
            self.calls = self.calls + x.shape[0]
            return super().forward(x)

    net = Counting(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    out = inference_copy(net, ["3"], torch.rand(2, 3, 8, 8))
    assert out is not net and net.calls == 0 and isinstance(net[1], nn.BatchNorm2d)


def test_input_gradient_and_render_with_fold(lite0):
    import objectives as obj
    import regularizers as reg
    from fvis.policies import CaptureOptions

    x = _images(2, seed=3)
    with frozen(lite0):
        copy = inference_copy(lite0, ["output"], x[:1])
        grads = []
        for net in (lite0, copy):
            xi = x.clone().requires_grad_()
            net(xi)[:, 94].sum().backward()
            grads.append(xi.grad)
    # equal up to float rounding: the folded weights round differently, which flips a few ReLU6
    # gates (an input perturbation of 1e-6 moves this gradient by about as much: 0.8 %)
    rel = float((grads[1] - grads[0]).norm() / grads[0].norm())
    assert rel < 0.02
    # a render diverges from float rounding alone: fold moves the image no more than a start
    # perturbed by 1e-7 does (measured: mean pixel change 0.0175 vs 0.0177 after 6 steps)
    before = _state(lite0)

    def run(eps=0.0, fold=False):
        img = fvis.FourierImage(224, batch=1, seed=0)
        with torch.no_grad():
            img.spectrum.add_(eps * torch.randn(img.spectrum.shape, generator=torch.Generator().manual_seed(5)))
        return fvis.optimize(lite0, obj.class_logit(94), img, [reg.TransformRobustness()], steps=6, progress=False,
                             policies=[CaptureOptions(fold=fold)])

    plain, nudged, folded = run(), run(eps=1e-7), run(fold=True)
    assert folded.values[0] > folded.history["objective"][0, 0] + 1  # the class rises
    assert (folded.input - plain.input).abs().mean() < 3 * (nudged.input - plain.input).abs().mean()
    assert all(torch.equal(before[k], v) for k, v in lite0.state_dict().items())
    assert isinstance(lite0.net._bn0, nn.BatchNorm2d) and not F.has_hooks(lite0)
