"""Each package imports on its own, in a fresh interpreter, whichever is imported first
(``import regularizers as reg`` before ``import fvis`` once failed with a circular import)."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["regularizers", "objectives", "fvis", "regularizers.snap", "fvis.params.tokens"])
def test_imports_first(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
