"""``fvis models``: list loadable model names."""
from __future__ import annotations

from ..lm import LM_NAMES
from ..models import EFFICIENTNET_LITE, available

HELP = "list loadable model names (image classifiers, then language models)"


def add_arguments(parser) -> None:
    pass


def run(args) -> None:
    for name in available():
        print(f"{name}\t{'offline weights' if name in EFFICIENTNET_LITE else 'torchvision (downloads once)'}")
    for name, where in LM_NAMES.items():  # language models: fvis invert, fvis layers
        print(f"{name}\tlanguage model, {'hub (downloads once)' if where == 'hub' else where}")
