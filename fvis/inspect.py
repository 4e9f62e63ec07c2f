"""Old import path, kept as a thin re-export: use :mod:`fvis.inspection` (``fvis.inspect``
shadowed the standard library's ``inspect``)."""
from .inspection import (ActivationMaps, FilterView, TopK, activation_maps, activation_sheet,  # noqa: F401
                         filter_view, first_conv, save_top_k, top_k)
