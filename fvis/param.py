"""Old import path, kept as a thin re-export: use :mod:`fvis.params` (one module per
parameterization)."""
from .params import (COLOR_CORRELATION, FourierImage, MacoImage, Parameterization, Perturbation,  # noqa: F401
                     PixelImage, Upsampled, natural_magnitude, resample_magnitude, shipped_magnitude)
from .params.base import _as_batch, _generator, _size  # noqa: F401  (still imported by fvis.prototype)
