"""Parameterizations, one per module: small ``nn.Module``s whose ``forward()`` returns the input
being optimized.

Image parameterizations return ``(B, C, H, W)`` in ``[0, 1]``; normalization for the model is the
model wrapper's job (:class:`fvis.models.ImageModel`). Random initial values come from a seeded
``torch.Generator`` (``seed``), so a seed reproduces a run exactly on the CPU.

``pixel`` (:class:`PixelImage`), ``fourier`` (:class:`FourierImage`), ``maco`` (:class:`MacoImage`
and the natural amplitude spectra), ``upsampled`` (:class:`Upsampled`, coarse-to-fine),
``perturbation`` (:class:`Perturbation`, adversarial examples), ``tokens``
(:class:`TokenEmbeddings`, :class:`OneHotTokens`, prompts) and ``mask`` (:class:`MaskedInput`,
feature isolation), ``transparent`` (:class:`Transparent`, an image with an alpha channel over
random backgrounds); ``base`` holds :class:`Parameterization`.
"""
from .base import COLOR_CORRELATION, Parameterization
from .fourier import FourierImage
from .maco import MacoImage, natural_magnitude, resample_magnitude, shipped_magnitude
from .mask import MaskedInput
from .perturbation import Perturbation
from .pixel import PixelImage
from .tokens import OneHotTokens, TokenEmbeddings
from .transparent import Transparent
from .upsampled import Upsampled

__all__ = ["COLOR_CORRELATION", "Parameterization", "PixelImage", "FourierImage", "MacoImage", "natural_magnitude",
           "resample_magnitude", "shipped_magnitude", "Upsampled", "Perturbation", "TokenEmbeddings",
           "OneHotTokens", "MaskedInput", "Transparent"]
