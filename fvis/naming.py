"""Names for files and history entries: file-name-safe slugs and unique names with a counter."""
from __future__ import annotations

import re
from typing import Iterable


def slug(text: str, default: str = "objective") -> str:
    """A file-name-safe version of ``text`` (an objective spec, a class name, a layer)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or default


def unique(names: Iterable[str], sep: str = "_") -> list[str]:
    """``names`` with repeats numbered from the second on: ``a, a, b -> a, a_2, b``."""
    out, seen = [], {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}{sep}{seen[name]}")
    return out
