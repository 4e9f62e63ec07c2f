"""Transparency (Lucid's alpha channel): an image with its own opacity, seen over random backgrounds.

While optimizing, every step shows the model the image over a fresh random smooth background, so
class evidence can only live where the image is opaque; a penalty on the opacity
(:class:`regularizers.MaskArea` on :meth:`Transparent.mask`) keeps the opaque part small. The
result is the image over a fixed ``backdrop``: the object the model needs, on a calm ground.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Parameterization, _generator

BACKDROPS = ("blur", "grey")


class Transparent(Parameterization):
    """``() -> alpha * image + (1 - alpha) * background``, ``(B, C, H, W)`` in [0, 1].

    ``image``: a ``(B, C, H, W)`` parameterization; ``alpha``: a ``(B, 1, H, W)`` one (values in
    [0, 1]). In training mode (the optimization) the background is random and smooth: a
    ``cells x cells`` grid of uniform random colours (``cells`` drawn in 1..4 per item), upsampled
    bicubically; a new one after every step (:meth:`after_step`), seeded by ``seed``. In eval
    mode (the result) it is ``backdrop``: ``blur`` (the image itself under a Gaussian blur of
    sigma = side / 16: a soft ground in the image's own colours) or ``grey`` (0.5).
    """

    def __init__(self, image: Parameterization, alpha: Parameterization, backdrop: str = "blur", seed: int = 0):
        super().__init__()
        if backdrop not in BACKDROPS:
            raise ValueError(f"backdrop must be one of {', '.join(BACKDROPS)}, got {backdrop!r}")
        if tuple(alpha.shape[-2:]) != tuple(image.shape[-2:]) or alpha.shape[1] != 1:
            raise ValueError(f"alpha {tuple(alpha.shape)} must be (B, 1) with the image's size {tuple(image.shape)}")
        self.image, self.alpha, self.backdrop = image, alpha, backdrop
        self.shape = tuple(image.shape)
        self.generator = _generator(seed)
        self.register_buffer("background", self.draw(), persistent=False)

    def draw(self) -> torch.Tensor:
        """A random smooth background ``(B, C, H, W)`` (from this parameterization's generator)."""
        b, c, h, w = self.shape
        cells = torch.randint(1, 5, (b,), generator=self.generator)
        grids = [F.interpolate(torch.rand(1, c, n, n, generator=self.generator), size=(h, w), mode="bicubic",
                               align_corners=False) for n in cells.tolist()]
        return torch.cat(grids).clamp(0, 1)

    def mask(self) -> torch.Tensor:
        """The opacity ``(B, 1, H, W)`` in [0, 1]."""
        return self.alpha()

    def forward(self) -> torch.Tensor:
        image, alpha = self.image(), self.alpha()
        if self.training:
            ground = self.background
        elif self.backdrop == "grey":
            ground = torch.full_like(image, 0.5)
        else:
            from regularizers import gaussian_blur  # here: regularizers imports fvis, which imports this module

            sigma = torch.full((image.shape[0],), max(image.shape[-2:]) / 16)
            ground = gaussian_blur(image.detach(), sigma)
        return alpha * image + (1 - alpha) * ground

    def after_step(self) -> None:
        self.image.after_step()
        self.alpha.after_step()
        self.background = self.draw().to(self.background.device)
