"""Optimizers, one kind per module: ``registry`` (:data:`OPTIMIZERS` by name,
:func:`make_optimizer`), ``steepest`` (:class:`SteepestDescent`: sign / L2 steps, MI-FGSM momentum),
``schedule`` (:class:`Scheduled`, :func:`cosine` learning-rate decay), ``protocol``
(:class:`SearchOptimizer`, what search optimizers meet) and the search optimizers ``gcg``
(:class:`GCG`) and ``snap_search`` (:class:`SnapSearch`).

The package sits below :mod:`fvis.engine` in the import contracts: the loop resolves optimizer
names through the registry and recognizes search optimizers by the protocol."""
from .gcg import GCG
from .protocol import SearchOptimizer
from .registry import OPTIMIZERS, make_optimizer
from .schedule import Scheduled, cosine
from .snap_search import SnapSearch
from .steepest import SteepestDescent

__all__ = ["OPTIMIZERS", "make_optimizer", "SearchOptimizer", "SteepestDescent", "Scheduled", "cosine", "GCG",
           "SnapSearch"]
