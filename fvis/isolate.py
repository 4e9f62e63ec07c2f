"""Old import path, kept as a thin re-export: use :mod:`fvis.attribution` (``isolate``,
``shared_features``) and :mod:`fvis.params` (``MaskedInput``)."""
from .attribution.isolate import Isolation, isolate, isolate_attribution, shared_features  # noqa: F401
from .params.mask import MaskedInput  # noqa: F401
