"""The recipe's cheaper operators (issue 23) compute what the plain ones did.

- ``regularizers.warp.warp_affine`` (one autograd node, input gradient only) against kornia's
  ``warp_affine``: forward and input gradient, bit for bit on the CPU with the kornia this was
  written against (the grid is kornia's own construction); within 1e-5 otherwise.
- ``FourierImage``'s fused forward/backward against ``sigmoid(_to_image(spectrum))`` through
  plain autograd: bit for bit on the CPU.
- A whole run with both against a run with the plain operators: the same image for the same seed.
"""
import kornia
import pytest
import torch

import fvis
import objectives as obj
import regularizers as reg
from regularizers.warp import warp_affine


def _kornia_warp(x, m, out_size, fill):
    return kornia.geometry.transform.warp_affine(x - fill, m, out_size, mode="bilinear", padding_mode="zeros",
                                                 align_corners=True) + fill


def _close(a, b, tol=1e-5):
    """Equal to the last bit where kornia builds the grid as this module does; else within ``tol``."""
    return torch.equal(a, b) or torch.allclose(a, b, atol=tol, rtol=tol)


class PlainTransforms(reg.TransformRobustness):
    """The transform as it was: kornia's warp_affine through autograd."""

    def transform(self, x, generator):
        b, _, h, w = x.shape
        m = self.matrices(self.sample(b, generator), (h, w), (h, w))
        return _kornia_warp(x, m, (h, w), self.fill)


class PlainFourier(fvis.FourierImage):
    """The Fourier image as it was: plain autograd operators."""

    def forward(self):
        return torch.sigmoid(self._to_image(self.spectrum))


@pytest.mark.parametrize("batch,size,keep", [(2, (64, 64), True), (3, (48, 80), False)])
def test_warp_matches_kornia_forward_and_input_gradient(batch, size, keep):
    t = reg.TransformRobustness(keep_size=keep, flip=0.5)
    h, w = size
    grow = 0 if keep else 2 * t.pad - t.jitter - t.jitter_after
    out_size = (h + grow, w + grow)
    m = t.matrices(t.sample(batch, torch.Generator().manual_seed(1)), (h, w), out_size)
    x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(2), requires_grad=True)
    g = torch.randn(batch, 3, *out_size, generator=torch.Generator().manual_seed(3))
    ref = _kornia_warp(x, m, out_size, 0.5)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    for fmt in (torch.contiguous_format, torch.channels_last):
        new = warp_affine(x, m, out_size, fill=0.5, memory_format=fmt)
        assert new.is_contiguous(memory_format=fmt)
        (new_grad,) = torch.autograd.grad(new, x, g.contiguous(memory_format=fmt))
        assert _close(new, ref), (new - ref).abs().max()
        assert _close(new_grad, ref_grad), (new_grad - ref_grad).abs().max()
    if keep:  # the warp really moves pixels (an identity would fail the comparisons above only by luck)
        assert (ref - x.detach()).abs().max() > 0.1


@pytest.mark.parametrize("size,batch", [(64, 1), ((48, 77), 2)])
def test_fused_fourier_matches_plain_autograd(size, batch):
    fused, plain = fvis.FourierImage(size, batch=batch, seed=4, sd=0.5), PlainFourier(size, batch=batch, seed=4, sd=0.5)
    g = torch.randn(fused.shape, generator=torch.Generator().manual_seed(5))
    y_fused, y_plain = fused(), plain()
    (y_fused * g).sum().backward()
    (y_plain * g).sum().backward()
    assert torch.equal(y_fused, y_plain)
    assert torch.equal(fused.spectrum.grad, plain.spectrum.grad)
    assert fused.spectrum.grad.abs().max() > 0
    assert set(fused.state_dict()) == {"scale", "color", "spectrum"}  # the backward's factor is not saved


def test_run_with_cheap_operators_gives_the_plain_runs_image():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    model = fvis.wrap(net, input_size=(48, 48))
    results = []
    for param, transforms in ((fvis.FourierImage, reg.TransformRobustness), (PlainFourier, PlainTransforms)):
        image = param(48, batch=2, seed=6)
        results.append(fvis.optimize(model, obj.class_logit(3), image, [transforms()], steps=8, seed=7,
                                     progress=False).input)
    assert _close(results[0], results[1], 1e-4), (results[0] - results[1]).abs().max()
    assert (results[0] - PlainFourier(48, batch=2, seed=6)().detach()).abs().max() > 0.01  # the run moved the image
