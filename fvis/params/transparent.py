"""Transparency (Lucid's alpha channel): an image with its own opacity, seen over random backgrounds.

While optimizing, every step shows the model the image over a fresh random smooth background, so
class evidence can only live where the image is opaque; a penalty on the opacity
(:class:`regularizers.MaskArea` on :meth:`Transparent.mask`) keeps the opaque part small. The
result (:meth:`Transparent.result`) is the image over a fixed ``backdrop``: the object the model
needs, on a calm ground.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Parameterization, _generator

BACKDROPS = ("blur", "grey")


class Transparent(Parameterization):
    """``() -> alpha * image + (1 - alpha) * background``, ``(B, C, H, W)`` in [0, 1].

    ``image``: a ``(B, C, H, W)`` parameterization; ``alpha``: a ``(B, 1, H, W)`` one (values in
    [0, 1]). ``forward()`` (what the optimization sees) uses a random smooth background: per item a
    ``n x n`` grid of uniform random colours (``n`` drawn in 1..4), upsampled bicubically; a new one
    after every step (:meth:`after_step`), seeded by ``seed``. :meth:`result` (what a run keeps) uses
    ``backdrop``: ``blur`` (the image itself under a Gaussian blur of sigma = shorter side / 16: a soft
    ground in the image's own colours) or ``grey`` (0.5).
    """

    def __init__(self, image: Parameterization, alpha: Parameterization, backdrop: str = "blur", seed: int = 0):
        super().__init__()
        if backdrop not in BACKDROPS:
            raise ValueError(f"backdrop must be one of {', '.join(BACKDROPS)}, got {backdrop!r}")
        if tuple(alpha.shape) != (image.shape[0], 1, *image.shape[2:]):
            raise ValueError(f"alpha {tuple(alpha.shape)} must be (B, 1, H, W) of the image's {tuple(image.shape)}")
        self.image, self.alpha, self.backdrop = image, alpha, backdrop
        self.shape = tuple(image.shape)
        self.generator = _generator(seed)
        self.register_buffer("background", self.draw(), persistent=False)

    def draw(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """A random smooth background ``(B, C, H, W)``: the small grids come from this
        parameterization's generator (on the CPU, so a seed gives the same grounds on every device),
        the upsampling runs where ``like`` lives, in its dtype."""
        b, c, h, w = self.shape
        like = torch.empty(0) if like is None else like
        cells = torch.randint(1, 5, (b,), generator=self.generator).tolist()
        grids = [torch.rand(1, c, n, n, generator=self.generator).to(like.device, like.dtype, non_blocking=True)
                 for n in cells]
        return torch.cat([F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False) for g in grids]).clamp(0, 1)

    def mask(self) -> torch.Tensor:
        """The opacity ``(B, 1, H, W)`` in [0, 1]."""
        return self.alpha()

    def forward(self) -> torch.Tensor:
        alpha = self.alpha()
        return alpha * self.image() + (1 - alpha) * self.background

    def result(self) -> torch.Tensor:
        image, alpha = self.image(), self.alpha()
        if self.backdrop == "grey":
            ground = torch.full_like(image, 0.5)
        else:
            from regularizers import gaussian_blur  # here: regularizers imports fvis, which imports this module

            sigma = torch.full((image.shape[0],), min(image.shape[-2:]) / 16)
            ground = gaussian_blur(image.detach(), sigma)
        return alpha * image + (1 - alpha) * ground

    def after_step(self) -> None:
        self.image.after_step()
        self.alpha.after_step()
        self.background = self.draw(self.background)
