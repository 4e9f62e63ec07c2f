"""Class-name lookup (ImageNet by default): index or name -> index."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from torchvision.models._meta import _IMAGENET_CATEGORIES

from .errors import FvisError, suggest


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (from torchvision's metadata)."""
    return tuple(_IMAGENET_CATEGORIES)


def resolve_class(c: int | str, names: Sequence[str] | None = None, num_classes: int | None = None) -> int:
    """Turn a class index (int or digit string) or a class name into an index.

    Names match case-insensitively, ignoring spaces/underscores/hyphens
    (``"egyptian_cat"`` == ``"Egyptian cat"``). Unknown names suggest close matches.
    """
    names = imagenet_classes() if names is None else names
    n = num_classes if num_classes is not None else len(names)
    if isinstance(c, str) and c.strip().lstrip("-").isdigit():
        c = int(c)
    if isinstance(c, int):
        if not 0 <= c < n:
            raise FvisError(f"class index {c} out of range: valid 0..{n - 1}")
        return c
    key = _norm(c)
    table = {_norm(name): i for i, name in enumerate(names)}
    if key in table:
        return table[key]
    raise FvisError(f"unknown class name {c!r}.{suggest(c, names)}")


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())
