"""Gradient attributions: vanilla gradient (:func:`saliency`), :func:`gradient_x_input` and
:func:`smoothgrad`."""
from __future__ import annotations

import time

import torch
from torch import nn

from ..display import normalize, reduce_channels
from ..errors import FvisError
from .scorer import Attribution, Scorer, as_batch, finish, gradients, plain_gradient, plain_settings


def saliency(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
             progress: bool = True) -> Attribution:
    """Vanilla gradient (Simonyan et al. 2013). ``raw``: d score / d x ``(B, C, H, W)``;
    heatmap: max over channels of |gradient|."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = plain_gradient(scorer, x, batch_size, progress, "saliency")
    return finish("saliency", grads, normalize(reduce_channels(grads, "absmax")), scorer, score, t0,
                   plain_settings(batch_size=batch_size))


def gradient_x_input(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16,
                     progress: bool = True) -> Attribution:
    """Gradient x input (Shrikumar et al. 2016), input in [0, 1] (black is the implicit reference).
    ``raw`` ``(B, C, H, W)``; heatmap: |sum over channels|."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        grads = plain_gradient(scorer, x, batch_size, progress, "gradxinput")
    raw = grads * x
    return finish("gradxinput", raw, normalize(reduce_channels(raw, "abssum")), scorer, score, t0,
                   plain_settings(batch_size=batch_size))


def smoothgrad(model: nn.Module, x: torch.Tensor, target=None, *, samples: int = 25, noise: float = 0.15,
               seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies,
    Gaussian noise of std ``noise * (max(x) - min(x))`` per item (seeded). ``raw``: mean gradient
    ``(B, C, H, W)``; heatmap: max over channels of |mean gradient|."""
    if samples < 1:
        raise FvisError(f"smoothgrad needs samples >= 1, got {samples}")
    t0 = time.perf_counter()
    x = as_batch(x, model)
    b, shape = x.shape[0], tuple(x.shape[1:])
    g = torch.Generator().manual_seed(seed)
    sd = (noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))).cpu()
    eps = torch.randn((b, samples) + shape, generator=g) * sd.view(b, 1, 1, 1, 1)  # drawn once: seeded, chunk-free
    items = torch.arange(b).repeat_interleave(samples)

    def rows(part):
        idx = torch.arange(part.start, part.stop)
        return x[idx // samples] + eps.view(-1, *shape)[idx].to(x.device)

    total = torch.zeros_like(x)
    with Scorer(model, target) as scorer:
        score = scorer.setup(x)
        for part, grad, _ in gradients(scorer, rows, b * samples, items, batch_size, progress, "smoothgrad"):
            total.index_add_(0, items[part].to(x.device), grad)
    raw = total / samples
    return finish("smoothgrad", raw, normalize(reduce_channels(raw, "absmax")), scorer, score, t0,
                   plain_settings(samples=samples, noise=noise, seed=seed, batch_size=batch_size))
