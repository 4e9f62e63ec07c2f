"""Transparency (Lucid's alpha channel): an image with its own opacity, seen over random backgrounds.

While optimizing, every step shows the model the image over a fresh random smooth background, so
class evidence can only live where the image is opaque; a penalty on the opacity
(:class:`regularizers.MaskArea` on :meth:`Transparent.mask`) keeps the opaque part small. The
result (:meth:`Transparent.result`) is the image over a fixed ``backdrop``: the object the model
needs, on a calm ground. ``backdrop_share`` shows the optimization that backdrop too, on that share of
the items at each step, so the kept picture is one the model has been trained to read.
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
    ground in the image's own colours) or ``grey`` (0.5). With ``backdrop_share`` in (0, 1], each
    item's next ground is, with that probability, the backdrop of the current image (detached: no
    gradient reaches the image through its own ground) instead of a random one.
    """

    def __init__(self, image: Parameterization, alpha: Parameterization, backdrop: str = "blur", seed: int = 0,
                 backdrop_share: float = 0.0):
        super().__init__()
        if backdrop not in BACKDROPS:
            raise ValueError(f"backdrop must be one of {', '.join(BACKDROPS)}, got {backdrop!r}")
        if not 0 <= backdrop_share <= 1:
            raise ValueError(f"backdrop_share must be in [0, 1], got {backdrop_share}")
        if tuple(alpha.shape) != (image.shape[0], 1, *image.shape[2:]):
            raise ValueError(f"alpha {tuple(alpha.shape)} must be (B, 1, H, W) of the image's {tuple(image.shape)}")
        self.image, self.alpha, self.backdrop, self.backdrop_share = image, alpha, backdrop, float(backdrop_share)
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

    def ground(self, image: torch.Tensor) -> torch.Tensor:
        """The ``backdrop`` behind ``image`` ``(B, C, H, W)``, detached."""
        if self.backdrop == "grey":
            return torch.full_like(image, 0.5)
        from regularizers import gaussian_blur  # here: regularizers imports fvis, which imports this module

        sigma = torch.full((image.shape[0],), min(image.shape[-2:]) / 16)
        return gaussian_blur(image.detach(), sigma)

    def result(self) -> torch.Tensor:
        image, alpha = self.image(), self.alpha()
        return alpha * image + (1 - alpha) * self.ground(image)

    @torch.no_grad()
    def after_step(self) -> None:
        self.image.after_step()
        self.alpha.after_step()
        background = self.draw(self.background)
        if self.backdrop_share:  # no draw otherwise: runs without it keep their random grounds
            own = torch.rand(self.shape[0], generator=self.generator) < self.backdrop_share
            if own.any():
                own = own.to(background.device)[:, None, None, None]
                background = torch.where(own, self.ground(self.image()), background)
        self.background = background
