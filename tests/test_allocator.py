"""fvis.tune_allocator: large CPU tensors come from the reused heap, not fresh mmapped pages."""
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, torch
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
import fvis
tuned = fvis.tune_allocator() if sys.argv[1] == "tune" else False
x = torch.ones(16 << 20)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
print(int(tuned), libc.mallinfo2().hblkhd >= 64 << 20)
"""


def _probe(mode: str, **env) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_tune_allocator_keeps_large_tensors_off_mmap():
    assert _probe("plain") == ["0", "True"]  # glibc's default: a 64 MiB tensor is its own mapping
    assert _probe("tune") == ["1", "False"]  # tuned: it comes from the heap, reused after a free
    assert _probe("tune", FVIS_MALLOC="default") == ["0", "True"]  # the opt-out keeps the defaults
