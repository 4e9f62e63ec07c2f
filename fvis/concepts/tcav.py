"""TCAV (Kim et al., ICML 2018) with an honest significance test, at a cost that barely grows with runs.

A concept is a set of images; at a layer, a linear classifier separates their activations from a
random set's, and its unit normal, pointing toward the concept, is the concept activation vector
(CAV). The TCAV score of a class is the share of the class's images whose class logit increases
along the CAV (positive directional derivative ``grad_layer logit . cav``); the magnitude score is
``sum(max(S, 0)) / sum(|S|)`` over the same derivatives ``S``.

Runs: the random pool is split into ``runs`` disjoint random sets ``R_0..R_{runs-1}``. Run ``i``
fits the concept against ``R_i``. Each run draws its own held-out split (``test_fraction``) on
which the CAV accuracy is measured.

Significance (``test``). Default ``"runs"``, as the paper, tensorflow/tcav and captum: the
concept's run scores against random-vs-random run scores (CAV ``i``: the random set ``R_j`` against
``R_i``), a two-sided two-sample t-test (Student's; Welch's with ``equal_var=False``). Its caveat:
the concept's images are one fixed set, so its CAVs vary across runs only through the negatives and
its run scores have a small spread even when the set is arbitrary; a fixed set of *random* images can
then come out "significant". ``"sets"`` makes the set the unit: every random set ``R_j``
(subsampled once to the concept's size) is a pseudo-concept fitted exactly like a concept against
every other random set (``runs - 1`` runs), and the concept's mean score is compared with the
``runs`` pseudo-concepts' mean scores by a two-sided t prediction test (``runs - 1`` degrees of
freedom). It controls that error but has little power where random sets themselves get extreme
scores (in the controlled test the planted concept scores 1.0 with p = 0.08 under it, p < 1e-4
under ``"runs"``). Both p-values are always reported (``p_value_runs``, ``p_value_sets``);
significance uses the chosen one, Bonferroni-corrected over every (concept, layer) in the call.

Cost: every image goes through the model once (concept and random images: a truncated forward
without gradients; class images: one forward and one backward for all layers), cached as
safetensors; the gradients are reused by every CAV (one matrix product); all CAVs of a layer
(concepts x runs and the null runs) are fitted together as one batched problem.

Classifiers (``cav``):

* ``"logistic"`` (default): L2-regularized logistic regression, the classifier the TCAV paper
  and the course describe. Its loss is smooth and strictly convex, so each run has exactly one CAV
  and the batched Newton solver below finds it to machine precision in a few iterations: the run
  to run spread of the scores then reflects the data, not the optimizer (captum and tensorflow/tcav
  fit with SGD, whose CAVs also depend on its iterations and learning rate). Fitting is cheap next
  to the forward passes, so there is no reason to trade accuracy for speed by default.
* ``"svm"``: L2-regularized linear SVM with the squared hinge loss (LinearSVC's default loss;
  tensorflow/tcav's default is a hinge-loss SGD classifier), fitted by the same generalized Newton
  solver.
* ``"fastcav"``: the difference of the two sets' mean activations (FastCAV, ICML 2025); no
  optimization at all, but it ignores the activations' covariance.

The solver works in the span of the training rows (representer theorem): with ``n`` training
images per run and ``D`` activation dimensions, a Newton step solves an ``(n+1) x (n+1)`` system
per run, batched over runs with :func:`torch.linalg.solve`, instead of ``D x D``. Features are
scaled by one number per layer (the root mean squared row norm of all images at that layer), so
``l2`` means the same at every layer; the CAV itself is expressed in the layer's raw activations.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import FvisError
from .activations import (POOLS, Images, cached, check_counts, check_layers, check_target, compute_activations,
                          compute_gradients, images_key, model_fingerprint)

CAV_METHODS = ("logistic", "svm", "fastcav")


# ----------------------------------------------------------------------------- statistics

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


# ----------------------------------------------------------------------------- CAV fitting

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


# ----------------------------------------------------------------------------- results

@dataclass
class ConceptResult:
    """TCAV of one concept at one layer (``concept == "random"``: the random-vs-random null)."""
    concept: str
    layer: str
    target: int
    target_name: str
    scores: torch.Tensor          # (runs,) sign-count TCAV scores
    magnitudes: torch.Tensor      # (runs,) magnitude scores
    accuracies: torch.Tensor      # (runs,) held-out CAV accuracy
    cavs: torch.Tensor            # (runs, D) unit CAVs
    bias: torch.Tensor            # (runs,) decision-function bias (of the raw normal)
    weights_norm: torch.Tensor    # (runs,) norm of the raw normal (decision f = |w| (x . cav) + bias)
    p_value: float | None = None      # the chosen test's (``test``)
    p_runs: float | None = None       # run scores vs random-vs-random run scores (tensorflow/tcav, captum)
    p_sets: float | None = None       # mean score vs the random pseudo-concepts' mean scores
    p_corrected: float | None = None
    significant: bool | None = None

    @property
    def score_mean(self) -> float:
        return self.scores.mean().item()

    @property
    def score_std(self) -> float:
        return self.scores.std(unbiased=True).item() if len(self.scores) > 1 else 0.0

    def record(self) -> dict:
        return {"concept": self.concept, "layer": self.layer, "target": self.target, "target_name": self.target_name,
                "score_mean": self.score_mean, "score_std": self.score_std,
                "magnitude_mean": self.magnitudes.mean().item(),
                "magnitude_std": self.magnitudes.std(unbiased=True).item() if len(self.magnitudes) > 1 else 0.0,
                "p_value": self.p_value, "p_value_runs": self.p_runs, "p_value_sets": self.p_sets,
                "p_corrected": self.p_corrected, "significant": self.significant,
                "cav_accuracy": self.accuracies.mean().item(), "cav_accuracy_min": self.accuracies.min().item(),
                "runs": len(self.scores), "scores": self.scores.tolist(), "magnitudes": self.magnitudes.tolist()}


@dataclass
class TCAVResult:
    results: list[ConceptResult]            # one per (concept, layer), concepts in the given order
    random: dict[str, ConceptResult]        # layer -> random-vs-random null
    settings: dict = field(default_factory=dict)
    layer_shapes: dict[str, list[int]] = field(default_factory=dict)
    null_means: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> (runs,) pseudo-concept mean scores

    def get(self, concept: str, layer: str | None = None) -> ConceptResult:
        for r in self.results:
            if r.concept == concept and (layer is None or r.layer == layer):
                return r
        raise KeyError((concept, layer))

    def records(self) -> list[dict]:
        return [r.record() for r in self.results]

    def to_json(self) -> dict:
        return {"schema": "fvis.tcav/1", "settings": self.settings, "results": self.records(),
                "random": [self.random[l].record() for l in self.random]}

    def save_cavs(self, path: str | Path) -> Path:
        from .cavfile import save_cavs

        return save_cavs(self, path)


# ----------------------------------------------------------------------------- TCAV

def _source_name(src) -> str:
    return "tensor" if isinstance(src, torch.Tensor) else str(src)


def _split(idx: torch.Tensor, test_fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = idx[torch.randperm(len(idx), generator=g)]
    n_test = max(1, int(round(test_fraction * len(idx))))
    return perm[n_test:], perm[:n_test]


def _sample(idx: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    return idx if n >= len(idx) else idx[torch.randperm(len(idx), generator=g)[:n]]


def tcav(model, layers: str | Sequence[str], target: int | str, class_images: Images,
         concepts: Mapping[str, Images], random: Images, runs: int = 20, cav: str = "logistic",
         relative: bool = False, seed: int = 0, *, pool: str = "flatten", l2: float = 1e-2,
         test_fraction: float = 0.25, random_size: int | None = None, min_images: int = 10,
         alpha: float = 0.05, test: str = "runs", equal_var: bool = True, cache: str | Path | None | bool = None,
         batch_size: int | None = None) -> TCAVResult:
    """TCAV scores of class ``target`` for each concept at each layer, tested against random CAVs.

    Args:
        model: an fvis image model (``fvis.load(...)`` / ``fvis.wrap(...)``).
        layers: a layer name or several (``named_modules()`` names of the network).
        target: class index or name (looked up in ``model.class_names``).
        class_images, concepts (name -> images), random: each an ``(N, 3, H, W)`` tensor in [0, 1]
            or a folder (resized, centre-cropped to the model's input size). ``random`` is a pool
            split into ``runs`` disjoint random sets (:func:`fvis.concepts.random_crops` makes a
            large pool from a few photos).
        runs: random sets, i.e. CAVs per concept and layer, and random-vs-random CAVs per layer.
        cav: ``"logistic"`` (default), ``"svm"`` or ``"fastcav"`` (see the module docstring).
        relative: fit each concept against the union of the other concepts (subsampled per run to
            the concept's size) instead of a random set; the null is still random-vs-random.
        pool: ``"flatten"`` (the paper's full activation map) or ``"mean"`` (channel means).
        l2: regularization strength on scaled features (logistic and svm).
        test_fraction: share of each set held out per run for the CAV accuracy.
        random_size: images per random set (default: the largest concept set, at most pool // runs).
        min_images: fewest images a concept or a random set may have.
        alpha: significance level after Bonferroni correction over concepts x layers.
        test: ``"runs"`` (default; the paper's) or ``"sets"``: the concept's mean score against the mean scores of random
            pseudo-concepts (each random set, fitted like a concept against the other random sets),
            a two-sided t prediction test with ``runs - 1`` degrees of freedom; ``"runs"``: the
            concept's run scores against random-vs-random run scores, a two-sided two-sample
            t-test (tensorflow/tcav and captum). Both p-values are always reported (module docstring).
        equal_var: Student's (default) or Welch's t-test for ``test="runs"``.
        cache: folder for the activation cache (default ``$FVIS_CACHE``/~/.cache/fvis; ``False``: none).

    Returns a :class:`TCAVResult`: per (concept, layer) the run scores, magnitudes, held-out CAV
    accuracies, the CAVs, the p-value against the layer's random-vs-random scores, its Bonferroni
    correction and significance; ``.random[layer]`` holds the null runs.
    """
    layers = check_layers(model, [layers] if isinstance(layers, str) else list(layers))
    if cav not in CAV_METHODS:
        raise FvisError(f"unknown CAV classifier {cav!r}: choose one of {', '.join(CAV_METHODS)}")
    if pool not in POOLS:
        raise FvisError(f"unknown pool {pool!r}: choose one of {', '.join(POOLS)}")
    if test not in ("sets", "runs"):
        raise FvisError(f"unknown test {test!r}: choose sets or runs")
    if runs < 3:
        raise FvisError(f"runs must be at least 3 for the tests, got {runs}")
    if not 0 < test_fraction < 1:
        raise FvisError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    concepts = dict(concepts)
    if not concepts:
        raise FvisError("give at least one concept")
    if relative and len(concepts) < 2:
        raise FvisError("relative TCAV needs at least two concepts (each is fitted against the others)")
    if "random" in concepts:
        raise FvisError("'random' is reserved for the random-vs-random null; rename that concept")
    target, target_name = check_target(model, target)

    size = tuple(model.input_size)
    keys = {"random": images_key(random, size)}
    for name, src in concepts.items():
        keys[name] = images_key(src, size)
        if not isinstance(src, torch.Tensor) and not isinstance(random, torch.Tensor) \
                and Path(src).resolve() == Path(random).resolve() or keys[name] == keys["random"]:
            raise FvisError(f"concept {name!r} and the random images are the same images ({_source_name(src)}): "
                            f"a concept must differ from the random pool")
    check_counts(concepts, random, runs, min_images, random_size)  # before any forward pass
    fp = model_fingerprint(model)

    def acts_of(src, key):
        return cached("acts", model, src, layers, pool, cache,
                      lambda x, ls: compute_activations(model, x, ls, pool, batch_size), fingerprint=fp, key=key)[0]

    concept_acts = {name: acts_of(src, keys[name]) for name, src in concepts.items()}
    for name, a in concept_acts.items():
        n = len(a[layers[0]])
        if n < min_images:
            raise FvisError(f"concept {name!r} has {n} images; each run needs at least {min_images} "
                            f"(some are held out to measure the CAV accuracy)")
    random_acts = acts_of(random, keys["random"])
    pool_n = len(random_acts[layers[0]])
    largest = max(len(a[layers[0]]) for a in concept_acts.values())
    m = random_size or min(largest, pool_n // runs)
    if m < min_images or runs * m > pool_n:
        need = runs * max(m, min_images)
        raise FvisError(f"the random pool has {pool_n} images, but {runs} disjoint random sets of "
                        f"{max(m, min_images)} need {need}: add images, use crops "
                        f"(fvis.concepts.random_crops / --random-crops), or fewer runs")
    grads = cached("grads", model, class_images, layers, pool, cache,
                   lambda x, ls: compute_gradients(model, x, ls, target, pool, batch_size),
                   extra=str(target), fingerprint=fp)[0]

    # rows: concepts in order, then the random pool
    offsets, start = {}, 0
    for name, a in concept_acts.items():
        offsets[name] = torch.arange(start, start + len(a[layers[0]]))
        start += len(a[layers[0]])
    pool_rows = torch.arange(start, start + pool_n)
    g = torch.Generator().manual_seed(seed)
    perm = pool_rows[torch.randperm(pool_n, generator=g)]
    sets = [perm[i * m:(i + 1) * m] for i in range(runs)]
    null_size = min(m, int(torch.tensor([len(v) for v in offsets.values()]).float().median().item()))

    problems: list[Problem] = []
    for name, rows in offsets.items():
        for i in range(runs):
            if relative:
                others = torch.cat([r for o, r in offsets.items() if o != name])
                neg = _sample(others, len(rows), g)
            else:
                neg = sets[i]
            pos_tr, pos_te = _split(rows, test_fraction, g)
            neg_tr, neg_te = _split(neg, test_fraction, g)
            problems.append(Problem(pos_tr, neg_tr, pos_te, neg_te))
    # the null: every random set R_j, subsampled once to the concept size, is a pseudo-concept
    # fitted like a concept against every other random set R_i (runs - 1 runs each)
    null_cells = []
    for j in range(runs):
        pos = _sample(sets[j], null_size, g)
        for i in range(runs):
            if i == j:
                continue
            pos_tr, pos_te = _split(pos, test_fraction, g)
            neg_tr, neg_te = _split(sets[i], test_fraction, g)
            problems.append(Problem(pos_tr, neg_tr, pos_te, neg_te))
            null_cells.append((j, i))
    classic = [null_cells.index(((i + 1) % runs, i)) for i in range(runs)]  # one CAV per negative set R_i
    owner = torch.tensor([j for j, _ in null_cells])

    results, null, null_means = [], {}, {}
    n_tests = len(concepts) * len(layers)
    shapes = _layer_shapes(model, layers)
    k_null = len(concepts) * runs
    keep = torch.cat([torch.arange(k_null), torch.tensor(classic) + k_null])  # dense CAVs: concepts, classic null
    pos = torch.full((len(problems),), -1, dtype=torch.long)
    pos[keep] = torch.arange(len(keep))
    for layer in layers:
        X = torch.cat([concept_acts[name][layer] for name in concepts] + [random_acts[layer]])
        cavs, wn, b, count, magnitude, acc = fit_and_score(X, problems, grads[layer], keep, cav, l2)

        def part(ks, name):
            return ConceptResult(name, layer, target, target_name, count[ks], magnitude[ks], acc[ks], cavs[pos[ks]],
                                 b[ks], wn[pos[ks]])

        null[layer] = part(torch.tensor(classic) + k_null, "random")
        null_count = count[k_null:]
        means = torch.zeros(runs).index_add_(0, owner, null_count) / (runs - 1)
        null_means[layer] = means
        for j, name in enumerate(concepts):
            r = part(torch.arange(j * runs, (j + 1) * runs), name)
            r.p_runs = t_test(r.scores, null[layer].scores, equal_var)[1]
            r.p_sets = prediction_test(r.score_mean, means)[1]
            r.p_value = r.p_sets if test == "sets" else r.p_runs
            r.p_corrected = min(1.0, r.p_value * n_tests)
            r.significant = bool(r.p_corrected < alpha)
            results.append(r)
    order = {name: j for j, name in enumerate(concepts)}
    results.sort(key=lambda r: (order[r.concept], layers.index(r.layer)))
    low = [r for r in results if r.accuracies.mean() < 0.6]
    if low:
        warnings.warn(f"fvis: CAV accuracy below 0.6 for {', '.join(f'{r.concept}@{r.layer}' for r in low[:4])}: "
                      f"the layer barely separates the concept from random images, its scores mean little")
    settings = {"model": getattr(model, "name", type(model).__name__), "model_fingerprint": fp,
                "layers": layers, "target": target, "target_name": target_name, "runs": runs, "cav": cav,
                "relative": relative, "seed": seed, "pool": pool, "l2": l2, "test_fraction": test_fraction,
                "random_size": m, "random_pool": pool_n, "null_positive_size": null_size,
                "concept_images": {n: len(r) for n, r in offsets.items()},
                "class_images": len(grads[layers[0]]), "alpha": alpha, "bonferroni_tests": n_tests,
                "test": test, "t_test": "student" if equal_var else "welch",
                "sources": {"class_images": _source_name(class_images), "random": _source_name(random),
                            **{f"concept:{n}": _source_name(s) for n, s in concepts.items()}}}
    return TCAVResult(results, null, settings, shapes, null_means)


def _layer_shapes(model, layers: Sequence[str]) -> dict[str, list[int]]:
    """Per-item output shape of each layer (one dry forward of a blank image)."""
    from ..hooks import Capture, frozen

    device = next(model.parameters()).device
    x = torch.zeros(1, getattr(model, "channels", 3), *model.input_size, device=device)
    with torch.no_grad(), frozen(model), Capture(model, layers) as cap:
        acts = cap.forward(x)
        return {l: list(acts[l].shape[1:]) for l in layers}
