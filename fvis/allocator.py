"""Keep CPU tensor memory in the process between optimization steps (glibc malloc settings).

With glibc's defaults, every tensor above the (dynamic, at most 32 MiB) mmap threshold gets
fresh pages from the OS and gives them back when freed, so each step of a CPU optimization
page-faults its large activations in again (measured in ``results/bench_allocator.md``, made by
``scripts/bench_allocator.py``). PyTorch's CPU performance guide suggests preloading jemalloc
or tcmalloc for the same reason; :func:`tune_allocator` gets the effect in-process with two
``mallopt`` calls.

The ``fvis`` command line calls it at start-up (set ``FVIS_MALLOC=default`` to keep glibc's
defaults); from Python, call it once yourself. It is process-wide: freed memory stays with
the process (its resident size stays at its peak) instead of going back to the OS.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap, which is reused
TRIM_THRESHOLD = (1 << 31) - 1  # never give the top of the heap back to the OS

_tuned = False


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds so freed tensor memory is reused, not returned.

    Returns True once applied (also on later calls); False where it does not apply (not Linux
    with glibc, ``FVIS_MALLOC=default``, or ``mallopt`` refused).
    """
    global _tuned
    if _tuned:
        return True
    if os.environ.get("FVIS_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mmap threshold first: setting either one turns off glibc's dynamic threshold, and a trim
    # threshold alone would leave every allocation above 128 KiB mmapped (much slower)
    _tuned = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _tuned
