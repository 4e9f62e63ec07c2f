"""Old import path, kept as a thin re-export: use :mod:`fvis.attribution.scorer`."""
from .attribution.scorer import (Attribution, Scorer, as_batch, chunks, finish, gradients,  # noqa: F401
                                 plain_gradient, plain_settings, resolve_targets)
