"""Which tokens mark one set of prompts against another: the log-odds ratio with an informative
Dirichlet prior of Monroe, Colaresi & Quinn (2008), "Fightin' Words" (their eqs. 16-22), and its
z-score, so that tokens common everywhere do not top the list (:func:`log_odds`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping

from ..errors import FvisError


@dataclass
class TokenOdds:
    """One token's counts in the studied set (``count``) and the baseline (``baseline_count``),
    the prior ``alpha``, the log-odds ratio ``delta``, its variance and ``z = delta / sqrt(var)``."""

    token: Hashable
    count: int
    baseline_count: int
    alpha: float
    delta: float
    variance: float
    z: float


def log_odds(counts: Mapping[Hashable, int], baseline: Mapping[Hashable, int], prior: float = 100.0,
             background: Mapping[Hashable, float] | None = None) -> list[TokenOdds]:
    """Tokens of ``counts`` (the studied set) against ``baseline``, ranked by z-score (highest first).

    With ``y`` counts, ``n`` totals and a Dirichlet prior ``alpha_w = prior * f_w`` (``f_w``: the
    token's share of ``background``; default: of both sets pooled; ``alpha_0 = prior``)::

        delta_w = log((y_w + a_w) / (n + a_0 - y_w - a_w)) - log((y'_w + a_w) / (n' + a_0 - y'_w - a_w))
        var_w   = 1 / (y_w + a_w) + 1 / (y'_w + a_w)
        z_w     = delta_w / sqrt(var_w)

    Every token seen in either set is scored; ``prior`` must be > 0."""
    if prior <= 0:
        raise FvisError(f"the prior's total weight must be > 0, got {prior}")
    if any(c < 0 for c in [*counts.values(), *baseline.values()]):
        raise FvisError("token counts must be >= 0")
    words = list(dict.fromkeys([*counts, *baseline]))
    if background is None:
        background = {w: counts.get(w, 0) + baseline.get(w, 0) for w in words}
    total = sum(background.get(w, 0) for w in words)
    if total <= 0:
        raise FvisError("no tokens to compare: both sets and the background are empty")
    n, m = sum(counts.values()), sum(baseline.values())
    out = []
    for w in words:
        a = prior * background.get(w, 0) / total
        y, yb = counts.get(w, 0), baseline.get(w, 0)
        if a <= 0:
            continue  # a token absent from the background has no prior: not scored
        delta = math.log((y + a) / (n + prior - y - a)) - math.log((yb + a) / (m + prior - yb - a))
        var = 1.0 / (y + a) + 1.0 / (yb + a)
        out.append(TokenOdds(w, y, yb, a, delta, var, delta / math.sqrt(var)))
    return sorted(out, key=lambda t: (-t.z, -t.count, str(t.token)))
