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

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import FvisError
from ..hooks import grey_activations
from ..inline import Displayable, Panel
from .activations import (POOLS, Images, cached, check_counts, check_layers, check_target, compute_activations,
                          compute_gradients, images_key, model_fingerprint)
from .cavfile import save_cavs
from .cavs import CAV_METHODS, Problem, fit_and_score
from .stats import prediction_test, t_test


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
class TCAVResult(Displayable):
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
        return save_cavs(self, path)

    def _panel(self) -> Panel:
        """One table row per concept and layer (the random-vs-random null last): TCAV score, p-value,
        significance and CAV accuracy."""
        rows = [{"concept": r.concept, "layer": r.layer, "class": r.target_name,
                 "TCAV score": f"{r.score_mean:.2f} ± {r.score_std:.2f}",
                 "p": "" if r.p_value is None else f"{r.p_value:.3g}",
                 "significant": "" if r.significant is None else r.significant,
                 "CAV accuracy": r.accuracies.mean().item()} for r in [*self.results, *self.random.values()]]
        return Panel("TCAV", table=rows, figures={k: self.settings[k] for k in ("runs", "test") if k in self.settings})


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
    """Per-item output shape of each layer (one dry forward of a grey image)."""
    acts = grey_activations(model, layers)
    return {l: list(acts[l].shape[1:]) for l in layers}
