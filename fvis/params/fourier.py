"""Lucid's Fourier parameterization: a decorrelated, 1/f-scaled spectrum."""
from __future__ import annotations

import torch
from torch import nn

from .base import COLOR_CORRELATION, Parameterization, _as_batch, _generator, _size


class FourierImage(Parameterization):
    """An image parameterized by its 2-D spectrum, scaled by ``1 / f^decay_power``,
    with optional colour decorrelation, through a sigmoid to [0, 1]: ``() -> (B, C, H, W)``.

    Args:
        size: ``H`` or ``(H, W)`` (non-square is fine). batch: B. channels: C.
        decay_power: spectrum scale ``1 / max(f, 1/max(H, W)) ** decay_power``; higher = smoother.
        decorrelate: mix the 3 channels with ImageNet's colour correlation (ignored unless C == 3).
        init: optional image in [0, 1] to start from (inverted exactly into the spectrum).
        sd: std of the random spectrum when ``init`` is None. seed: seeds it.
    """

    def __init__(self, size=224, batch: int = 1, channels: int = 3, decay_power: float = 1.0,
                 decorrelate: bool = True, init: torch.Tensor | None = None, sd: float = 0.01,
                 seed: int | None = 0):
        super().__init__()
        h, w = _size(size) if init is None else init.shape[-2:]
        c = channels if init is None else init.shape[-3]
        self.shape = (batch, c, h, w)
        freqs = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
        # Lucid: irfft (1/HW) of spectrum * sqrt(HW) / f^d, divided by 4  ==  ortho irfft of spectrum / f^d / 4
        scale = 1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power / 4.0
        # (H, W//2+1, 2): one factor per real/imaginary entry of the spectrum (expanded, not
        # broadcast over the last dim: a size-2 broadcast defeats vectorization, 4x slower)
        self.register_buffer("scale", scale[..., None].expand(*scale.shape, 2).contiguous())  # includes Lucid's 1/4
        # the backward's factor: scale, doubled where irfft's input stands for two conjugate entries
        # (torch's own irfft backward: columns 1 .. W - (W//2 + 1) count twice); not saved with the state
        doubled = torch.ones(w // 2 + 1)
        doubled[1:w - (w // 2 + 1) + 1] = 2.0
        self.register_buffer("grad_scale", self.scale * doubled[:, None], persistent=False)
        self.register_buffer("color", COLOR_CORRELATION.clone() if decorrelate and c == 3 else torch.eye(c))
        if init is None:
            spectrum = torch.randn((batch, c, h, w // 2 + 1, 2), generator=_generator(seed)) * sd
        else:
            spectrum = self._invert(_as_batch(init, batch))
        self.spectrum = nn.Parameter(spectrum.contiguous())

    def _to_image(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The image before the sigmoid (the path :class:`_SpectrumToImage` fuses, for reference)."""
        b, c, h, w = self.shape
        image = torch.fft.irfft2(torch.view_as_complex(spectrum * self.scale), s=(h, w), norm="ortho")
        return (self.color @ image.reshape(b, c, h * w)).view(b, c, h, w)  # colour mix per pixel

    def _invert(self, image: torch.Tensor) -> torch.Tensor:
        pre = torch.logit(image.clamp(1e-4, 1 - 1e-4))
        decorrelated = torch.einsum("bdhw,cd->bchw", pre, torch.linalg.inv(self.color))
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale[..., 0]
        return torch.view_as_real(spectrum)

    def forward(self) -> torch.Tensor:
        return _SpectrumToImage.apply(self.spectrum, self.scale, self.grad_scale, self.color, self.shape[-2:])


class _SpectrumToImage(torch.autograd.Function):
    """``sigmoid(color @ irfft2(spectrum * scale))`` as one autograd node: the same operations as
    ``torch.sigmoid(FourierImage._to_image(spectrum))`` forward, and the same arithmetic backward
    with fewer temporaries (sigmoid in place; irfft's doubling and the scale in one in-place product)."""

    @staticmethod
    def forward(ctx, spectrum, scale, grad_scale, color, size):
        b, c = spectrum.shape[:2]
        h, w = size
        image = torch.fft.irfft2(torch.view_as_complex(spectrum * scale), s=(h, w), norm="ortho")
        out = torch.matmul(color, image.reshape(b, c, h * w)).sigmoid_().view(b, c, h, w)
        ctx.save_for_backward(out, grad_scale, color)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        out, grad_scale, color = ctx.saved_tensors
        b, c, h, w = out.shape
        mixed = torch.ops.aten.sigmoid_backward(grad, out).reshape(b, c, h * w)
        image = torch.matmul(color.mT, mixed).view(b, c, h, w)
        return torch.view_as_real(torch.fft.rfft2(image, norm="ortho")).mul_(grad_scale), None, None, None, None
