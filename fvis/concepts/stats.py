"""The significance tests TCAV uses, without scipy: the regularized incomplete beta function
(:func:`betainc`), a two-sample t-test (:func:`t_test`) and a t prediction test
(:func:`prediction_test`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import FvisError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_test(a: Sequence[float], b: Sequence[float], equal_var: bool = True) -> tuple[float, float]:
    """Two-sided two-sample t-test: ``(t, p)``; Student's (pooled variance, as tensorflow/tcav and
    captum) or Welch's. Both samples constant: ``p = 0`` if their means differ, else ``1``."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise FvisError("a t-test needs at least 2 values per sample")
    ma, mb = a.mean().item(), b.mean().item()
    va, vb = a.var(unbiased=True).item(), b.var(unbiased=True).item()
    if equal_var:
        df = na + nb - 2
        se2 = ((na - 1) * va + (nb - 1) * vb) / df * (1 / na + 1 / nb)
    else:
        se2 = va / na + vb / nb
        df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)) if se2 > 0 else 1.0
    if se2 <= 0:
        return (0.0, 1.0) if ma == mb else (math.copysign(math.inf, ma - mb), 0.0)
    t = (ma - mb) / math.sqrt(se2)
    p = betainc(df / 2, 0.5, df / (df + t * t))
    return t, min(1.0, max(0.0, p))


def prediction_test(value: float, sample: Sequence[float]) -> tuple[float, float]:
    """Two-sided t prediction test: is ``value`` a plausible new draw from the population of
    ``sample``? ``t = (value - mean) / (sd * sqrt(1 + 1/n))`` with ``n - 1`` degrees of freedom."""
    x = torch.as_tensor(sample, dtype=torch.float64).flatten()
    n = len(x)
    if n < 2:
        raise FvisError("a prediction test needs at least 2 reference values")
    m, sd = x.mean().item(), x.std(unbiased=True).item()
    se = sd * math.sqrt(1 + 1 / n)
    if se <= 0:
        return (0.0, 1.0) if value == m else (math.copysign(math.inf, value - m), 0.0)
    t = (value - m) / se
    df = n - 1
    return t, min(1.0, max(0.0, betainc(df / 2, 0.5, df / (df + t * t))))
