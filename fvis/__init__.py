"""fvis: optimization-based feature visualization for PyTorch.

Objectives (package ``objectives``) are maximized over a parameterized input
(:mod:`fvis.param`) by one loop, :func:`fvis.optimize`, with regularizers
(package ``regularizers``) transforming the input and/or adding penalties.
"""
from importlib.metadata import PackageNotFoundError, version as _version

from .allocator import tune_allocator
from .engine import Result, optimize
from .errors import FvisError
from .inline import show
from .models import ImageModel, load, wrap
from .params import FourierImage, PixelImage

try:
    __version__ = _version("fvis")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["optimize", "Result", "FvisError", "ImageModel", "load", "wrap", "FourierImage", "PixelImage",
           "tune_allocator", "show"]
