"""MACO: only the Fourier phase is optimized over a fixed natural amplitude spectrum."""
from __future__ import annotations

from importlib.resources import files

import torch
from safetensors.torch import load
from torch import nn
from torchvision.transforms.v2 import functional as F

from .base import COLOR_CORRELATION, Parameterization, _generator, _size


def natural_magnitude(images: torch.Tensor, size=None) -> torch.Tensor:
    """Mean amplitude spectrum of natural images ``(N, 3, H, W)`` in [0, 1] (each image centred,
    colours decorrelated as :class:`FourierImage` does): ``(3, H, W // 2 + 1)``, orthonormal FFT.
    ``size`` first resizes the images (short side) and centre-crops."""
    if size is not None:
        h, w = _size(size)
        images = F.center_crop(F.resize(images, [min(h, w)], antialias=True), [h, w])
    x = images.float() - images.float().mean((-2, -1), keepdim=True)
    c = x.shape[1]
    if c == 3:
        x = torch.einsum("bdhw,cd->bchw", x, torch.linalg.inv(COLOR_CORRELATION))
    return torch.fft.rfft2(x, norm="ortho").abs().mean(0)


def shipped_magnitude(size=224) -> torch.Tensor:
    """The natural amplitude spectrum shipped with fvis (from the offline sample photos; made by
    ``scripts/make_maco_spectrum.py``), resampled to ``size``: ``(3, H, W // 2 + 1)``."""
    data = load((files("fvis") / "data" / "natural_magnitude.safetensors").read_bytes())["magnitude"].float()
    return resample_magnitude(data, size)


def resample_magnitude(magnitude: torch.Tensor, size) -> torch.Tensor:
    """A ``(C, H0, W0 // 2 + 1)`` amplitude spectrum of ``H0 x W0`` images moved to ``size``: each
    frequency takes the value at the nearest frequency (in cycles/pixel) of the source, and the
    result keeps the source's energy per pixel."""
    h, w = _size(size)
    h0, w0 = magnitude.shape[-2], 2 * (magnitude.shape[-1] - 1)
    if (h, w) == (h0, w0):
        return magnitude.clone()
    iy = (torch.fft.fftfreq(h) * h0).round().long() % h0
    ix = (torch.fft.rfftfreq(w) * w0).round().long().clamp(max=magnitude.shape[-1] - 1)
    out = magnitude[:, iy][:, :, ix]
    return out * (magnitude.pow(2).sum() / (h0 * w0) / (out.pow(2).sum() / (h * w))).sqrt()


class MacoImage(Parameterization):
    """MACO (Fel et al. 2023): only the Fourier *phase* is optimized; the amplitude spectrum is a
    fixed natural one, so the image keeps natural-image frequency statistics:
    ``sigmoid(4 * colour_mix(irfft2(magnitude * exp(i * phase))))``, ``() -> (B, 3, H, W)``.

    Args:
        size: ``H`` or ``(H, W)``. batch: B.
        magnitude: ``(3, H, W // 2 + 1)`` amplitude spectrum, e.g. :func:`natural_magnitude` of
            reference images (default: :func:`shipped_magnitude`; nothing is downloaded).
        seed: seeds the random initial phase (uniform in ``[-pi, pi)``).
    The gain 4 makes the sigmoid ``~ 0.5 + x`` for small ``x``: pixel contrast stays natural.
    """

    def __init__(self, size=224, batch: int = 1, magnitude: torch.Tensor | None = None, seed: int | None = 0):
        super().__init__()
        h, w = _size(size)
        magnitude = shipped_magnitude((h, w)) if magnitude is None else magnitude.float()
        if magnitude.shape[-2:] != (h, w // 2 + 1):
            magnitude = resample_magnitude(magnitude, (h, w))
        c = magnitude.shape[0]
        self.shape = (batch, c, h, w)
        self.register_buffer("magnitude", magnitude.contiguous())
        self.register_buffer("color", COLOR_CORRELATION.clone() if c == 3 else torch.eye(c))
        phase = (torch.rand((batch, *magnitude.shape), generator=_generator(seed)) * 2 - 1) * torch.pi
        self.phase = nn.Parameter(phase)

    def forward(self) -> torch.Tensor:
        b, c, h, w = self.shape
        image = torch.fft.irfft2(torch.polar(self.magnitude.expand_as(self.phase), self.phase), s=(h, w), norm="ortho")
        return torch.sigmoid(4 * (self.color @ image.reshape(b, c, h * w)).view(b, c, h, w))
