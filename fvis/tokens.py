"""Old import path, kept as a thin re-export: use :mod:`fvis.params` (``TokenEmbeddings``,
``OneHotTokens``) and :mod:`fvis.lm` (``allowed_tokens``)."""
from .lm.vocab import _norm, allowed_tokens  # noqa: F401
from .params.tokens import OneHotTokens, TokenEmbeddings, _init_ids  # noqa: F401
