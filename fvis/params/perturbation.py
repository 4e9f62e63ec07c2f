"""A real image plus a perturbation inside an eps-ball (adversarial examples)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Parameterization, _as_batch, _generator


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
