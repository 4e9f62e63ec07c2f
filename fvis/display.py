"""Display helpers for maps over images: normalization, channel reduction, the inferno colour
map, overlays and spotlights (attributions, activation maps, masks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(maps: torch.Tensor, quantile: float | None = 0.99) -> torch.Tensor:
    """``(B, H, W)`` non-negative maps -> [0, 1] per item, dividing by the ``quantile``
    (robust to a few extreme pixels) or by the max (``quantile=None``)."""
    flat = maps.flatten(1).float()
    top = flat.quantile(quantile, dim=1) if quantile is not None else flat.max(1).values
    top = torch.where(top > 0, top, flat.max(1).values).clamp_min(1e-12)
    return (maps / top.view(-1, 1, 1)).clamp(0, 1)


def reduce_channels(raw: torch.Tensor, how: str) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H, W)``: ``"absmax"`` max over channels of |raw|, ``"abssum"`` |sum over
    channels|, ``"positive"`` positive part of the channel sum."""
    if how == "absmax":
        return raw.abs().amax(1)
    if how == "abssum":
        return raw.sum(1).abs()
    if how == "positive":
        return raw.sum(1).clamp_min(0)
    raise ValueError(f"unknown reduction {how!r}")


_INFERNO = torch.tensor([[0.001, 0.0, 0.014], [0.129, 0.047, 0.291], [0.342, 0.062, 0.429],
                         [0.541, 0.135, 0.415], [0.736, 0.216, 0.33], [0.894, 0.353, 0.194],
                         [0.978, 0.558, 0.035], [0.975, 0.798, 0.206], [0.988, 0.998, 0.645]])


def colorize(heatmap: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` in [0, 1] -> ``(3, H, W)`` RGB with the inferno colour map."""
    t = heatmap.float().clamp(0, 1) * (len(_INFERNO) - 1)
    lo = t.floor().long().clamp(max=len(_INFERNO) - 2)
    frac = (t - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac
    return rgb.permute(2, 0, 1)


def spotlight(image: torch.Tensor, mask: torch.Tensor, floor: float = 0.15) -> torch.Tensor:
    """``image`` ``(C, H, W)`` dimmed where ``mask`` ``(H, W)`` in [0, 1] is low: what a mask keeps."""
    if mask.shape[-2:] != image.shape[-2:]:
        mask = F.interpolate(mask[None, None].float(), image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return image.float().cpu() * (floor + (1 - floor) * mask.float().cpu().clamp(0, 1))[None]


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """Heatmap ``(h, w)`` in [0, 1] over ``image`` ``(C, H, W)``: coloured where the map is high.
    The map is resized bilinearly to the image if needed."""
    h, w = image.shape[-2:]
    if heatmap.shape[-2:] != (h, w):
        heatmap = F.interpolate(heatmap[None, None].float(), (h, w), mode="bilinear", align_corners=False)[0, 0]
    image = image.float().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    a = alpha * heatmap.float().cpu().clamp(0, 1)[None]
    return image * (1 - a) + colorize(heatmap.cpu()) * a
