"""One module per ``fvis`` command, each with ``HELP``, ``add_arguments(parser)`` and ``run(args)``.
:data:`COMMANDS` is the registry :mod:`fvis.cli` builds its parser from, in ``fvis --help`` order."""
from . import (attack, entangle, evaluate, explain, filters, gallery, invert, layers, models, prototype, render,
               robustness, sweep, tcav, topk)
from . import lm_study, lm_topk
from . import atlas, map  # noqa: A004  (fvis map / fvis atlas: feature spaces)

COMMANDS = {"models": models, "layers": layers, "render": render, "prototype": prototype, "attack": attack,
            "robustness": robustness,
            "evaluate": evaluate, "entangle": entangle, "sweep": sweep, "gallery": gallery, "invert": invert,
            "lm-study": lm_study, "lm-topk": lm_topk,
            "explain": explain, "filters": filters, "topk": topk, "tcav": tcav,
            "map": map, "atlas": atlas}
