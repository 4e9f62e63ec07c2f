"""``python -m fvis``: the ``fvis`` command line (also under ``torchrun -m fvis``)."""
import sys

from .cli import main

sys.exit(main())
