"""Progress bars: drawn only when asked for *and* stderr is a terminal, so logs and pipes never
get cursor codes."""
from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, show: bool = True, **kwargs) -> tqdm:
    """A ``tqdm`` bar (``leave=False`` unless given); ``show=False`` hides it, and it is hidden
    anyway when stderr is not a terminal (``disable=False`` forces it, e.g. in tests)."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("disable", None if show else True)
    return tqdm(iterable, **kwargs)
