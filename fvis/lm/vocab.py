"""The vocabulary a prompt may use: :func:`allowed_tokens`."""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import FvisError
from .model import LanguageModel


def _norm(text: str) -> str:
    return text.strip().lower()


def planted_targets(lm: LanguageModel, n: int, seed: int = 0, length: int = 3) -> list[str]:
    """``n`` distinct single-token targets that a prompt of ``length`` tokens is known to reach:
    each is the model's own greedy next token after random printable-ASCII allowed tokens (for
    benchmarks and tests: a solution exists)."""
    pool = allowed_tokens(lm, None, ascii_only=True).nonzero().flatten().cpu()
    g = torch.Generator().manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        ids = pool[torch.randint(len(pool), (length,), generator=g)].tolist()
        with torch.no_grad():
            nxt = int(lm.logits_of_ids(ids, keep=1)[0, -1].argmax())
        text = lm.decode([nxt])
        if text.strip() and lm.encode(text) == [nxt] and text not in out:
            out.append(text)
    return out


def allowed_tokens(lm: LanguageModel, target: str | None = None, ascii_only: bool = False,
                   banned: Sequence[int] = ()) -> torch.Tensor:
    """``(V,)`` bool mask of token ids a prompt may use.

    Excluded: special/added tokens, tokens whose text is empty or holds U+FFFD (byte fragments that
    cannot round-trip alone), ``banned`` ids, and for a ``target`` text every token whose
    normalized text (stripped, lower-case) is a prefix of the normalized target or starts with it
    (so the target itself, " Par" for " Paris", " Parisian" ...). ``ascii_only``: printable ASCII.
    """
    texts = lm.token_texts()
    v = lm.vocab_size
    mask = torch.ones(lm.embedding.shape[0], dtype=torch.bool)
    mask[v:] = False
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    special |= set(getattr(lm.tokenizer, "added_tokens_decoder", {}) or {})
    goal = _norm(target) if target else ""
    for i, t in enumerate(texts):
        if i in special or not t or "\ufffd" in t:
            mask[i] = False
            continue
        if ascii_only and not (t.isascii() and t.isprintable()):
            mask[i] = False
            continue
        if goal:
            n = _norm(t)
            if n and (goal.startswith(n) or n.startswith(goal)):
                mask[i] = False
    for i in banned:
        if 0 <= int(i) < mask.numel():
            mask[int(i)] = False
    if not mask.any():
        raise FvisError("no token is allowed in the prompt under these constraints")
    return mask.to(lm.device)
