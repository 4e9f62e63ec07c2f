"""Old import path, kept as a thin re-export: use :mod:`fvis.lm` (``invert``, ``evaluate_prompt``,
``allowed_tokens``...), :mod:`fvis.params` (``TokenEmbeddings``, ``OneHotTokens``) and
:mod:`fvis.optim` (``GCG``, ``SnapSearch``)."""
from .lm import (METHODS, Budget, Embed, Gcg, Inversion, Prompt, PromptEval, allowed_tokens,  # noqa: F401
                 evaluate_prompt, invert, print_summary)
from .optim import GCG, SnapSearch  # noqa: F401
from .params import OneHotTokens, TokenEmbeddings  # noqa: F401
