"""Penalty regularizers on the input image (per item, minimized)."""
from __future__ import annotations

import torch

from .base import Regularizer
from .blur import gaussian_blur


class LpPenalty(Regularizer):
    """``weight * mean(|x - center|^p)`` per item (``p=1``: L1, ``p=2``: L2)."""

    def __init__(self, weight: float = 0.05, p: float = 1.0, center: float = 0.5):
        super().__init__(weight, name=f"L{p:g}")
        self.p, self.center = p, center

    def penalty(self, x, acts):
        return self.weight * (x - self.center).abs().pow(self.p).flatten(1).mean(1)


def L1(weight: float = 0.05, center: float = 0.5) -> LpPenalty:
    return LpPenalty(weight, 1.0, center)


def L2(weight: float = 0.05, center: float = 0.5) -> LpPenalty:
    return LpPenalty(weight, 2.0, center)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, 1, H, W)``, Rec. 601 weights (mean of channels for other counts)."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def high_frequency_energy(x: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Share of luminance spectral energy above ``cutoff`` cycles/pixel (Hann window): ``(B,)``.

    The quality metric HFER of the fvis guide; natural photos score about 0.01-0.05.
    """
    lum = luminance(x)[:, 0]
    h, w = lum.shape[-2:]
    window = torch.outer(torch.hann_window(h, periodic=False, device=x.device, dtype=x.dtype),
                         torch.hann_window(w, periodic=False, device=x.device, dtype=x.dtype))
    lum = (lum - lum.mean((-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(lum).abs().pow(2)  # full spectrum: every frequency counted once
    f = torch.sqrt(torch.fft.fftfreq(h, device=x.device)[:, None] ** 2
                   + torch.fft.fftfreq(w, device=x.device)[None, :] ** 2)
    total = power.flatten(1).sum(1).clamp_min(1e-12)
    return (power * (f > cutoff)).flatten(1).sum(1) / total


def high_pass_power(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Mean squared luminance detail finer than a Gaussian of ``sigma`` px (``lum - blur(lum)``,
    reflected borders): an absolute high-frequency energy ``(B,)``. Unlike the HFER *share*, it
    cannot be lowered by adding low-frequency energy (a large blob)."""
    lum = luminance(x)
    smooth = gaussian_blur(lum, torch.full((lum.shape[0],), float(sigma)))
    return (lum - smooth).pow(2).flatten(1).mean(1)


class FrequencyPenalty(Regularizer):
    """Penalize high frequencies per item:
    ``tv * total_variation + high_freq * HFER + hf_energy * high_pass_power``.

    ``total_variation`` is the mean absolute difference of neighbouring pixels; ``HFER`` the
    share of spectral energy above ``cutoff`` cycles/pixel; ``high_pass_power`` the absolute
    energy of the detail finer than a 1 px Gaussian (:func:`high_pass_power`).
    """

    def __init__(self, tv: float = 0.25, high_freq: float = 0.0, cutoff: float = 0.25, hf_energy: float = 0.0):
        super().__init__(1.0, name="frequency")
        self.tv, self.high_freq, self.cutoff, self.hf_energy = tv, high_freq, cutoff, hf_energy

    def penalty(self, x, acts):
        out = x.new_zeros(x.shape[0])
        if self.tv:
            dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
            dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
            out = out + self.tv * (dx + dy)
        if self.high_freq:
            out = out + self.high_freq * high_frequency_energy(x, self.cutoff)
        if self.hf_energy:
            out = out + self.hf_energy * high_pass_power(x)
        return out
