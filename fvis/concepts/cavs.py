"""Fitting concept activation vectors: all CAVs of a layer as one batched problem
(:func:`fit_cavs`: logistic regression or squared-hinge SVM by a Newton solver in the span of the
training rows, or FastCAV), their held-out :func:`accuracy`, and TCAV :func:`scores`. The
module docstring of :mod:`fvis.concepts.tcav` explains the choices."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import FvisError

CAV_METHODS = ("logistic", "svm", "fastcav")


@dataclass
class Problem:
    """One CAV: training rows of the positive (concept) and negative sets, and held-out rows."""
    pos: torch.Tensor
    neg: torch.Tensor
    pos_test: torch.Tensor
    neg_test: torch.Tensor


def _loss(kind: str, m: torch.Tensor):
    """Loss, first and second derivative in the margin ``m = y f``."""
    if kind == "logistic":
        s = torch.sigmoid(-m)
        return torch.nn.functional.softplus(-m), -s, s * (1 - s)
    h = (1 - m).clamp_min(0)  # squared hinge
    return h * h, -2 * h, 2.0 * (m < 1).to(m.dtype)


def fit_cavs(X: torch.Tensor, problems: Sequence[Problem], method: str = "logistic", l2: float = 1e-2,
             max_iter: int = 100, tol: float = 1e-12, chunk: int = 512,
             coefficients: bool = False, gram: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Fit every problem's linear classifier on rows of ``X`` ``(N, D)`` together.

    Returns ``(cavs (K, D) unit vectors toward the positives, weights (K, D) raw normals,
    bias (K,))``: the decision function is ``X @ weights.T + bias``. ``coefficients=True``:
    ``(coef (K, N), bias (K,))`` instead, with ``weights = coef @ X`` (no dense vector formed).
    ``gram``: the scaled rows' Gram matrix, passed down to the chunks (computed once per call).
    ``"logistic"``/``"svm"`` minimize ``mean_i loss(y_i f_i) + l2/2 |w|^2`` on ``X / scale`` (one scale per call: the
    root mean squared row norm of ``X``) by damped Newton steps in the span of the training rows,
    all problems at once; ``"fastcav"``: difference of the means, bias at the midpoint."""
    if method not in CAV_METHODS:
        raise FvisError(f"unknown CAV classifier {method!r}: choose one of {', '.join(CAV_METHODS)}")
    if len(problems) > chunk and method != "fastcav":  # bounded memory: (chunk, n, n) systems at a time
        if gram is None:  # the scaled rows' Gram matrix, computed once for every chunk
            Xs = X.float() / X.float().pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
            gram = (Xs @ Xs.T).double()
        parts = [fit_cavs(X, problems[i:i + chunk], method, l2, max_iter, tol, chunk, coefficients, gram)
                 for i in range(0, len(problems), chunk)]
        return tuple(torch.cat(t) for t in zip(*parts))
    X = X.float()
    K, N = len(problems), X.shape[0]
    if method == "fastcav":
        M = torch.zeros(K, N)
        for k, p in enumerate(problems):
            M[k].index_add_(0, p.pos, torch.full((len(p.pos),), 1 / len(p.pos)))
            M[k].index_add_(0, p.neg, torch.full((len(p.neg),), -1 / len(p.neg)))
        if coefficients:  # b = -w . mid with w = M X, mid = |M| X / 2
            return M, -0.5 * ((M @ (X @ X.T)) * M.abs()).sum(1)
        W = M @ X
        mid = (M.clamp_min(0) - M.clamp_max(0)) @ X / 2  # (mean_pos + mean_neg) / 2
        b = -(W * mid).sum(1)
        return _unit(W), W, b
    scale = X.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    used, inverse = torch.unique(torch.cat([torch.cat([p.pos, p.neg]) for p in problems]), return_inverse=True)
    Xu = X[used] / scale
    G_all = (Xu @ Xu.T).double() if gram is None else gram[used[:, None], used[None, :]]
    n = max(len(p.pos) + len(p.neg) for p in problems)
    I = torch.zeros(K, n, dtype=torch.long)
    Y = torch.zeros(K, n, dtype=torch.float64)
    S = torch.zeros(K, n, dtype=torch.float64)
    start = 0
    for k, p in enumerate(problems):
        m = len(p.pos) + len(p.neg)
        I[k, :m] = inverse[start:start + m]
        Y[k, :len(p.pos)], Y[k, len(p.pos):m] = 1.0, -1.0
        S[k, :m] = 1.0
        start += m
    G = G_all[I[:, :, None], I[:, None, :]]  # (K, n, n); padding rows repeat row 0 with weight 0
    counts = S.sum(1, keepdim=True)
    eye = torch.eye(n, dtype=torch.float64)

    def objective(alpha, bias):
        f = (G @ alpha[..., None])[..., 0] + bias[:, None]
        loss = _loss(method, Y * f)[0]
        return (S * loss).sum(1) / counts[:, 0] + 0.5 * l2 * (alpha * (G @ alpha[..., None])[..., 0]).sum(1)

    alpha = torch.zeros(K, n, dtype=torch.float64)
    bias = torch.zeros(K, dtype=torch.float64)
    value = objective(alpha, bias)
    for _ in range(max_iter):
        f = (G @ alpha[..., None])[..., 0] + bias[:, None]
        _, d1, d2 = _loss(method, Y * f)
        r = S * Y * d1 / counts + l2 * alpha
        gb = (S * Y * d1).sum(1) / counts[:, 0]
        Dm = S * d2 / counts
        DG = Dm[:, :, None] * G
        A = torch.zeros(K, n + 1, n + 1, dtype=torch.float64)
        A[:, :n, :n] = DG + l2 * eye
        A[:, :n, n] = Dm
        A[:, n, :n] = DG.sum(1)
        A[:, n, n] = Dm.sum(1) + 1e-12
        step = torch.linalg.solve(A, -torch.cat([r, gb[:, None]], 1)[..., None])[..., 0]
        da, db = step[:, :n], step[:, n]
        slope = (da * (G @ r[..., None])[..., 0]).sum(1) + gb * db  # directional derivative (<= 0)
        if slope.abs().max() < tol:
            break
        t = torch.ones(K, dtype=torch.float64)
        done = torch.zeros(K, dtype=torch.bool)
        new_alpha, new_bias, new_value = alpha.clone(), bias.clone(), value.clone()
        for _ in range(40):  # backtracking line search (Armijo), per problem
            cand_a, cand_b = alpha + t[:, None] * da, bias + t * db
            cand_v = objective(cand_a, cand_b)
            ok = ~done & (cand_v <= value + 1e-4 * t * slope)
            new_alpha[ok], new_bias[ok], new_value[ok] = cand_a[ok], cand_b[ok], cand_v[ok]
            done |= ok
            if done.all():
                break
            t = torch.where(done, t, t / 2)
        if not done.any():
            break
        alpha, bias, value = new_alpha, new_bias, new_value
    dense = torch.zeros(K, len(used), dtype=torch.float64)
    dense.scatter_add_(1, I, alpha * S)
    if coefficients:  # W = dense @ X[used] / scale^2
        coef = torch.zeros(K, N)
        coef[:, used] = (dense / scale.double() ** 2).float()
        return coef, bias.float()
    W = (dense.float() @ Xu) / scale
    return _unit(W), W, bias.float()


def _unit(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def accuracy(X: torch.Tensor, problems: Sequence[Problem], weights: torch.Tensor, bias: torch.Tensor,
             chunk: int = 64) -> torch.Tensor:
    """Held-out accuracy per problem ``(K,)``: the test rows of ``chunk`` problems gathered at once."""
    n = max(len(p.pos_test) + len(p.neg_test) for p in problems)
    K = len(problems)
    idx, sign, mask = torch.zeros(K, n, dtype=torch.long), torch.zeros(K, n), torch.zeros(K, n)
    for k, p in enumerate(problems):
        a, b = len(p.pos_test), len(p.pos_test) + len(p.neg_test)
        idx[k, :a], idx[k, a:b], sign[k, :a], sign[k, a:b], mask[k, :b] = p.pos_test, p.neg_test, 1.0, -1.0, 1.0
    out = []
    for i in range(0, len(problems), chunk):
        rows, w = X[idx[i:i + chunk]].float(), weights[i:i + chunk].float()
        f = torch.einsum("knd,kd->kn", rows, w) + bias[i:i + chunk, None]
        right = torch.where(sign[i:i + chunk] > 0, f > 0, f <= 0).float() * mask[i:i + chunk]
        out.append(right.sum(1) / mask[i:i + chunk].sum(1).clamp_min(1))
    return torch.cat(out)


def scores(grads: torch.Tensor, cavs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sign-count score (K,), magnitude score (K,), derivatives (N, K))`` for class-image
    gradients ``(N, D)`` and unit CAVs ``(K, D)``: one matrix product for every CAV."""
    S = grads.float() @ cavs.float().T
    count = (S > 0).float().mean(0)
    magnitude = S.clamp_min(0).sum(0) / S.abs().sum(0).clamp_min(1e-30)
    return count, magnitude, S


def fit_and_score(X: torch.Tensor, problems: Sequence[Problem], grads: torch.Tensor, keep: torch.Tensor,
                  method: str = "logistic", l2: float = 1e-2) -> tuple[torch.Tensor, ...]:
    """:func:`fit_cavs`, :func:`accuracy` and :func:`scores` for every problem, with dense CAVs
    formed only for the problems in ``keep``: the others (the ``runs x (runs - 1)`` pseudo-concepts
    of the null) are scored in the span of the rows, ``grads @ w = (grads @ X.T) @ coef``.
    Returns ``(unit cavs (len(keep), D), their norms, bias (K,), count (K,), magnitude (K,),
    held-out accuracy (K,))``; both scores are invariant to a CAV's length."""
    X = X.float()
    coef, bias = fit_cavs(X, problems, method, l2, coefficients=True)
    W = coef[keep] @ X
    count, magnitude, _ = scores(grads.float() @ X.T, coef)
    acc = accuracy(X @ X.T, problems, coef, bias)  # decision values from the Gram rows
    return _unit(W), W.norm(dim=1), bias, count, magnitude, acc
