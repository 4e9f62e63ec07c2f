"""Parameterizations: small ``nn.Module``s whose ``forward()`` returns the input being optimized.

Image parameterizations return ``(B, C, H, W)`` in ``[0, 1]``; normalization for
the model is the model wrapper's job (:class:`fvis.models.ImageModel`).
Random initial values come from a seeded ``torch.Generator`` (``seed``), so a
seed reproduces a run exactly on CPU.
"""
from __future__ import annotations

from importlib.resources import files

import torch
from safetensors.torch import load
from torch import nn
from torchvision.transforms.v2 import functional as F

# Lucid's colour correlation (ImageNet), rows = RGB; normalized by its largest column norm.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(0 if seed is None else seed)
    return g


def _as_batch(image: torch.Tensor, batch: int) -> torch.Tensor:
    """``(C, H, W)`` or ``(1|B, C, H, W)`` -> ``(B, C, H, W)`` float in [0, 1]."""
    image = image.detach().float()
    if image.dim() == 3:
        image = image[None]
    if image.shape[0] == 1 and batch > 1:
        image = image.expand(batch, -1, -1, -1)
    if image.shape[0] != batch:
        raise ValueError(f"init image batch {image.shape[0]} does not match batch {batch}")
    return image.clamp(0, 1)


class Parameterization(nn.Module):
    """Base class: ``forward() -> input``; ``after_step()`` runs after every optimizer step
    (projections, snapping); ``shape`` is the output shape."""

    def after_step(self) -> None:
        pass

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class PixelImage(Parameterization):
    """Free pixels squashed to [0, 1] by a sigmoid: ``() -> (B, C, H, W)``.

    Args:
        size: ``H`` or ``(H, W)``. batch: B. channels: C (any count).
        init: optional image ``(C, H, W)`` / ``(B, C, H, W)`` in [0, 1] to start from.
        sd: std of the random init (in logit space) when ``init`` is None.
        seed: seeds the random init.
    """

    def __init__(self, size=224, batch: int = 1, channels: int = 3, init: torch.Tensor | None = None,
                 sd: float = 0.01, seed: int | None = 0):
        super().__init__()
        h, w = _size(size) if init is None else init.shape[-2:]
        self.shape = (batch, channels if init is None else init.shape[-3], h, w)
        if init is None:
            raw = torch.randn(self.shape, generator=_generator(seed)) * sd
        else:
            raw = torch.logit(_as_batch(init, batch).clamp(1e-4, 1 - 1e-4))
        self.raw = nn.Parameter(raw.contiguous())

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.raw)


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
        self.register_buffer("color", COLOR_CORRELATION.clone() if decorrelate and c == 3 else torch.eye(c))
        if init is None:
            spectrum = torch.randn((batch, c, h, w // 2 + 1, 2), generator=_generator(seed)) * sd
        else:
            spectrum = self._invert(_as_batch(init, batch))
        self.spectrum = nn.Parameter(spectrum.contiguous())

    def _to_image(self, spectrum: torch.Tensor) -> torch.Tensor:
        b, c, h, w = self.shape
        image = torch.fft.irfft2(torch.view_as_complex(spectrum * self.scale), s=(h, w), norm="ortho")
        return (self.color @ image.reshape(b, c, h * w)).view(b, c, h, w)  # colour mix per pixel

    def _invert(self, image: torch.Tensor) -> torch.Tensor:
        pre = torch.logit(image.clamp(1e-4, 1 - 1e-4))
        decorrelated = torch.einsum("bdhw,cd->bchw", pre, torch.linalg.inv(self.color))
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale[..., 0]
        return torch.view_as_real(spectrum)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self._to_image(self.spectrum))


class Perturbation(Parameterization):
    """A real image plus a perturbation kept inside an eps-ball and the [0, 1] box:
    ``() -> image + delta``, ``(B, C, H, W)``.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1] (the clean input; not optimized).
        eps: radius of the ball in pixel-value units ([0, 1] scale), e.g. ``8/255``.
        norm: ``"linf"`` or ``"l2"`` (per item, over all of ``C, H, W``).
        random_start: start uniformly inside the L-inf ball / at a random point of the L2 ball
            (seeded by ``seed``); otherwise at the clean image.
        batch: repeat a single image this many times.

    The optimized tensor is the perturbed image itself (``adv``; ``delta`` = ``adv - image``),
    stepped and projected with the same arithmetic as torchattacks' PGD (``adv + step``, then
    ``image + clamp(adv - image)`` clamped to the box), so identical gradients give identical
    images. ``after_step`` projects onto the ball, then onto the box (which only shrinks each
    coordinate of ``adv - image``, so the norm bound still holds).
    """

    def __init__(self, image: torch.Tensor, eps: float, norm: str = "linf", random_start: bool = False,
                 seed: int | None = 0, batch: int | None = None):
        super().__init__()
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        image = image.detach().float()
        image = _as_batch(image, batch or (1 if image.dim() == 3 else image.shape[0]))
        self.eps, self.norm = float(eps), norm
        self.shape = tuple(image.shape)
        self.register_buffer("image", image.contiguous())
        delta = torch.zeros(self.shape)
        if random_start:  # drawn on the CPU from the seeded generator (same values on every device)
            g = _generator(seed)
            if norm == "linf":
                delta = torch.empty(self.shape).uniform_(-eps, eps, generator=g)
            else:
                direction = torch.randn(self.shape, generator=g)
                direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                radius = torch.rand(self.shape[0], generator=g).view(-1, 1, 1, 1) * eps
                delta = direction * radius
        self.adv = nn.Parameter((image + delta.to(image.device)).clamp(0, 1))
        if self.distance().max() > self.eps:  # rounding pushed a start outside the ball
            self.after_step()

    @property
    def delta(self) -> torch.Tensor:
        """``(B, C, H, W)`` the perturbation ``adv - image`` (a new tensor)."""
        return self.adv.detach() - self.image

    def distance(self) -> torch.Tensor:
        """``(B,)`` the norm of each item's perturbation (L-inf or L2, pixel-value units)."""
        d = self.delta.flatten(1)
        return d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)

    @torch.no_grad()
    def after_step(self) -> None:
        d = self.adv - self.image
        if self.norm == "linf":
            d.clamp_(-self.eps, self.eps)
        else:
            norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            d.mul_((self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1))
        self.adv.copy_((self.image + d).clamp(0, 1))

    def forward(self) -> torch.Tensor:
        return self.adv


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


class Upsampled(Parameterization):
    """Another parameterization's output resized (bilinear, antialiased when shrinking) to
    ``size``: optimize a coarse image while the model sees its input size (coarse-to-fine).
    ``() -> (B, C, H, W)``."""

    def __init__(self, inner: Parameterization, size):
        super().__init__()
        self.inner, self.size = inner, _size(size)
        self.shape = (*inner.shape[:2], *self.size)

    def forward(self) -> torch.Tensor:
        return torch.nn.functional.interpolate(self.inner(), size=self.size, mode="bilinear", align_corners=False)

    def after_step(self) -> None:
        self.inner.after_step()
