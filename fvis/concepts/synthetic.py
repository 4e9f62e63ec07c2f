"""Concept images that need no download: procedural textures, plain colours, crops of any photos.

* :func:`texture` ``"stripes" | "dots" | "checks" | "zigzags"``: two random colours, a random
  period (``scale`` range, in pixels), a random orientation and phase per image.
* :func:`colour`: a plain colour (a name from :data:`COLOURS` or an RGB triple) with small random
  jitter in brightness and a little pixel noise, so the set is not one point in activation space.
* :func:`random_crops`: random resized crops (area 10-100 %, aspect 3/4-4/3, random flips) of the
  images of a folder or tensor: a few photos give a large random pool.

What they can show: whether a layer separates a texture or colour and whether the class logit moves
along it. What they cannot: clean textures and flat colours are far from the images the network was
trained on, so a layer may separate them from photos by image statistics alone (high CAV accuracy
says little then), and a concept defined by them is narrower than the word ("striped" here means
these sinusoid-free, two-colour square-wave stripes).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from ..errors import FvisError
from ..files import list_images, load_image, save_image

KINDS = ("stripes", "dots", "checks", "zigzags")
COLOURS = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.15), "blue": (0.1, 0.2, 0.85), "yellow": (0.95, 0.85, 0.1),
           "orange": (0.95, 0.5, 0.05), "purple": (0.5, 0.15, 0.7), "black": (0.05, 0.05, 0.05),
           "white": (0.95, 0.95, 0.95), "grey": (0.5, 0.5, 0.5), "brown": (0.45, 0.28, 0.1),
           "pink": (0.95, 0.55, 0.7), "cyan": (0.1, 0.8, 0.85)}


def _uniform(n, lo, hi, g):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def texture(kind: str, n: int, size: int | tuple[int, int] = 224, seed: int = 0,
            scale: tuple[float, float] = (8.0, 40.0)) -> torch.Tensor:
    """``n`` images ``(n, 3, H, W)`` in [0, 1] of a procedural texture ``kind``."""
    if kind not in KINDS:
        raise FvisError(f"unknown texture {kind!r}: choose one of {', '.join(KINDS)}")
    if n < 1:
        raise FvisError(f"need at least one image, got {n}")
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    theta = _uniform(n, 0, math.pi, g)[:, None, None]
    period = _uniform(n, *scale, g)[:, None, None]
    phase = _uniform(n, 0, 1, g)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    u = (xx * torch.cos(theta) + yy * torch.sin(theta)) / period + phase
    v = (-xx * torch.sin(theta) + yy * torch.cos(theta)) / period + phase
    if kind == "stripes":
        mask = (u % 1) < 0.5
    elif kind == "checks":
        mask = ((u % 1) < 0.5) ^ ((v % 1) < 0.5)
    elif kind == "dots":
        radius = _uniform(n, 0.2, 0.4, g)[:, None, None]
        mask = ((u % 1) - 0.5) ** 2 + ((v % 1) - 0.5) ** 2 < radius ** 2
    else:  # zigzags: stripes along v, displaced by a triangle wave of u
        tri = 2 * torch.abs((u * 0.5) % 1 - 0.5)
        mask = ((v + tri) % 1) < 0.5
    c1, c2 = _two_colours(n, g)
    m = mask[:, None].float()
    return (m * c1[:, :, None, None] + (1 - m) * c2[:, :, None, None]).clamp(0, 1)


def _two_colours(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random colour pairs with a clear brightness contrast."""
    c1 = torch.rand(n, 3, generator=g)
    c2 = torch.rand(n, 3, generator=g)
    low = (c1.mean(1) - c2.mean(1)).abs() < 0.3
    c2[low] = 1 - c1[low]
    return c1, c2


def colour(name: str | tuple[float, float, float], n: int, size: int | tuple[int, int] = 224, seed: int = 0,
           jitter: float = 0.08, noise: float = 0.02) -> torch.Tensor:
    """``n`` plain images of one colour (a name in :data:`COLOURS` or RGB in [0, 1]), jittered."""
    if isinstance(name, str):
        key = name.lower().replace("gray", "grey")
        if key not in COLOURS:
            raise FvisError(f"unknown colour {name!r}: choose one of {', '.join(COLOURS)} or give RGB")
        rgb = torch.tensor(COLOURS[key])
    else:
        rgb = torch.tensor(name, dtype=torch.float32)
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    base = (rgb[None] + jitter * (torch.rand(n, 3, generator=g) * 2 - 1)).clamp(0, 1)
    return (base[:, :, None, None] + noise * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


def concept(spec: str, n: int, size: int | tuple[int, int] = 224, seed: int = 0) -> torch.Tensor:
    """``"stripes"``, ``"dots"``, ``"checks"``, ``"zigzags"`` or ``"colour:NAME"`` -> images."""
    if spec.startswith(("colour:", "color:")):
        return colour(spec.split(":", 1)[1], n, size, seed)
    if spec in COLOURS:
        return colour(spec, n, size, seed)
    if spec not in KINDS:
        raise FvisError(f"unknown synthetic concept {spec!r}: choose one of {', '.join(KINDS)} or colour:NAME "
                        f"({', '.join(COLOURS)})")
    return texture(spec, n, size, seed)


def random_crops(source: str | Path | torch.Tensor, n: int, size: int | tuple[int, int] = 224, seed: int = 0,
                 area: tuple[float, float] = (0.1, 1.0)) -> torch.Tensor:
    """``n`` random resized crops ``(n, 3, H, W)`` of the images in a folder (read at full size) or
    a tensor ``(N, 3, h, w)``: area share in ``area``, aspect 3/4-4/3, random horizontal flips."""


    if isinstance(source, torch.Tensor):
        images = list(source.float())
    else:
        images = [load_image(p, min_side=16) for p in list_images(source)]
    if not images:
        raise FvisError(f"no images to crop in {source}")
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=g))]
        H, W = img.shape[-2:]
        a = _uniform(1, *area, g).item() * H * W
        ratio = math.exp(_uniform(1, math.log(3 / 4), math.log(4 / 3), g).item())
        ch = int(round(min(H, math.sqrt(a / ratio))))
        cw = int(round(min(W, math.sqrt(a * ratio))))
        top = int(torch.randint(H - ch + 1, (1,), generator=g))
        left = int(torch.randint(W - cw + 1, (1,), generator=g))
        crop = F.resize(img[:, top:top + ch, left:left + cw], [h, w], antialias=True)
        if torch.rand(1, generator=g).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop.clamp(0, 1))
    return torch.stack(out)


def save_folder(images: torch.Tensor, folder: str | Path, prefix: str = "img") -> Path:
    """Write ``(N, 3, H, W)`` images as lossless PNGs ``<prefix>_0000.png`` ... into ``folder``."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        save_image(im, folder / f"{prefix}_{i:04d}.png")
    return folder
