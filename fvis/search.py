"""Old import path, kept as a thin re-export: use :mod:`fvis.optim` (``GCG``, ``SnapSearch``)."""
from .optim import GCG, SnapSearch  # noqa: F401
