"""The base of every parameterization and the helpers they share (sizes, seeded generators,
initial images, Lucid's colour correlation)."""
from __future__ import annotations

import torch
from torch import nn

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

    def result(self) -> torch.Tensor:
        """The input a run keeps: ``forward()``, unless the parameterization adds randomness that only
        the optimization should see (:class:`Transparent`'s backgrounds)."""
        return self()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
