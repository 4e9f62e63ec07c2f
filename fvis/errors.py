"""User-facing errors: the CLI prints these as one line, without a traceback."""
from __future__ import annotations

import difflib
from typing import Iterable


class FvisError(ValueError):
    """A problem with the user's input (bad layer, spec, index, path...)."""


def suggest(name: str, choices: Iterable[str], n: int = 5) -> str:
    """`" Did you mean: a, b?"` for the closest `choices`, or `""` when none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:  # substring matches help for long dotted names ("blocks.3" -> "_blocks.3")
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""
