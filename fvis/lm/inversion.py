"""Prompt inversion and feature visualization for causal language models, on :func:`fvis.optimize`.

Find a K-token prompt that makes the model emit a target text (or drives a neuron), two ways,
both through the one engine loop:

* :class:`~fvis.lm.settings.Embed` (``method="embed"``): continuous prompt embeddings
  (:class:`fvis.params.TokenEmbeddings`, K positions x R restarts as the batch) with the PEZ
  projection: the forward runs at the nearest allowed vocabulary embeddings (real tokens), the
  gradient moves the continuous embeddings (:class:`fvis.optim.SnapSearch`: normalized gradient
  steps, or Adam), and a *scored snap* picks, among the ``nearest`` vocabulary neighbours of the
  moved embeddings, the best-scoring real-token prompt and hard-snaps to it. Optional snapping
  penalty (:class:`regularizers.Snap`, cosine or L2) and periodic hard snaps.
* :class:`~fvis.lm.settings.Gcg` (``method="gcg"``): greedy coordinate gradient search
  (:class:`fvis.optim.GCG`) over a one-hot relaxation (:class:`fvis.params.OneHotTokens`): the
  gradient w.r.t. the one-hot picks top-k swaps per position; a batch of sampled single-token
  swaps is scored exactly.

Vocabulary constraints (:func:`fvis.lm.allowed_tokens`): no special tokens, no tokens that do not
decode to clean text, never the target token nor tokens that prefix-match it, optionally ASCII only.
Results are judged honestly (:func:`fvis.lm.evaluate_prompt`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, fields, replace
from typing import Callable

import torch


import objectives.language as lang
from regularizers.snap import Snap

from ..engine import optimize
from ..errors import FvisError, suggest
from ..hooks import OUTPUT, Capture, frozen
from ..inline import Displayable, Panel
from ..optim import GCG, SnapSearch
from ..params import OneHotTokens, TokenEmbeddings
from ..params.tokens import _init_ids
from ..policies import PerItem, ProgressBar, TimeLimit
from .evaluation import PromptEval, evaluate_prompt
from .model import LanguageModel
from .settings import Budget, Embed, Gcg, Prompt, check_target, search_method
from .vocab import allowed_tokens

_PROMPT = {"length", "prefix", "suffix", "init", "ascii_only"}
_BUDGET = {"restarts", "steps", "time_limit", "stop_on_success"}


@dataclass
class Inversion(Displayable):
    """What :func:`invert` returns: ``best`` and all ``restarts`` (ranked best first) as
    :class:`PromptEval`, the settings, timings, and the engine's :class:`fvis.Result`."""

    best: PromptEval
    restarts: list
    settings: dict
    seconds: float
    steps: int
    seconds_to_success: float | None
    stopped: str | None
    baseline: float | None = None
    result: object = None

    def as_dict(self) -> dict:
        return {"best": self.best.as_dict(), "restarts": [r.as_dict() for r in self.restarts],
                "settings": self.settings, "seconds": self.seconds, "steps": self.steps,
                "seconds_to_success": self.seconds_to_success, "stopped": self.stopped,
                "baseline": self.baseline}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)

    def _panel(self) -> Panel:
        """A compact table: one row per restart (best first): the prompt, whether it works, p(target),
        the greedy continuation and the perplexity; the target and timings as key figures."""
        s = self.settings
        rows = [{"prompt": repr(s.get("prefix", "")) + " + " + repr(r.text) if s.get("prefix") else repr(r.text),
                 "success": r.success, "p(target)": r.p_target, "greedy": r.greedy and repr(r.greedy),
                 "perplexity": r.perplexity, "value": r.value} for r in self.restarts or [self.best]]
        rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in rows]
        goal = {"target": repr(s["target"])} if s.get("target") is not None else {"objective": s.get("objective", "")}
        figures = {**goal, "steps": self.steps, "seconds": self.seconds,
                   "seconds to success": self.seconds_to_success if self.seconds_to_success is not None else "-"}
        if self.stopped:
            figures["stopped"] = self.stopped
        return Panel("prompt inversion", figures=figures, table=rows)


def invert(lm: LanguageModel, target: str | None = None, *, objective=None, prompt: Prompt | None = None,
           method: str | Embed | Gcg = "embed", budget: Budget | None = None, seed: int = 0, progress: bool = True,
           **options) -> Inversion:
    """Find a prompt (:class:`Prompt`: ``length`` tokens between fixed ``prefix`` and ``suffix``
    texts) that makes ``lm`` emit ``target`` next (or maximizes ``objective``, e.g. a neuron), with
    ``budget.restarts`` prompts optimized as one batch by :func:`fvis.optimize`; ``method``:
    ``"embed"`` / ``"gcg"`` or their settings (:class:`Embed`, :class:`Gcg`).

    Single settings may also be given by name in ``options`` (``length=5``, ``steps=40``,
    ``lr=4.0``, ``topk=64`` ...): they replace the matching field of ``prompt``, ``budget`` or
    the method (``None`` keeps the default); a name that none of them has is an error.

    The run stops early when a restart succeeds on its real tokens (``budget.stop_on_success``;
    target only) or after ``budget.time_limit`` seconds. Every restart is then judged on its
    decoded-and-re-tokenized text (:func:`evaluate_prompt`); restarts are ranked by (success,
    round-trip, p(target) or objective value).
    """
    start = time.perf_counter()
    known = _PROMPT | _BUDGET | {f.name for f in fields(Embed)} | {f.name for f in fields(Gcg)}
    for name in options:
        if name not in known:
            raise FvisError(f"invert() has no setting {name!r}.{suggest(name, sorted(known))}")
    prompt = _with(prompt or Prompt(), {k: v for k, v in options.items() if k in _PROMPT})
    budget = _with(budget or Budget(), {k: v for k, v in options.items() if k in _BUDGET})
    method = search_method(method, **{k: v for k, v in options.items() if k not in _PROMPT | _BUDGET})
    if (target is None) == (objective is None):
        raise FvisError("give exactly one of a target text or an objective (e.g. a neuron)")
    check_target(target)
    prefix_ids = lm.encode(prompt.prefix) if prompt.prefix else []
    suffix_ids = lm.encode(prompt.suffix) if prompt.suffix else []
    target_ids: list[int] = []
    if target is not None:
        target_ids = lm.encode(target)
        if not target_ids:
            raise FvisError(f"target {target!r} tokenizes to nothing")
        objective = lang.target_logprob(target_ids, name="logp(target)")
        ctx = lm.with_context(prefix_ids, suffix_ids, tail=target_ids[:-1], keep=len(target_ids))
    else:
        ctx = lm.with_context(prefix_ids, suffix_ids, tail=[], keep=1)
    allowed = allowed_tokens(lm, target, ascii_only=prompt.ascii_only)
    init_ids = None
    if prompt.init:
        init_ids = lm.encode(prompt.init)
        if len(init_ids) != prompt.length:
            raise FvisError(f"--init {prompt.init!r} is {len(init_ids)} tokens; the prompt length is {prompt.length}")

    settings = {"model": lm.name, "target": target, "target_ids": target_ids, "objective": objective.name,
                "method": method.name, "length": prompt.length, "restarts": budget.restarts, "steps": budget.steps,
                "prefix": prompt.prefix, "suffix": prompt.suffix, "init": prompt.init,
                "ascii_only": prompt.ascii_only, "seed": seed, "allowed_tokens": int(allowed.sum()),
                "time_limit": budget.time_limit, **method.settings()}
    keep = _roundtrip_filter(lm, prefix_ids, suffix_ids)
    param, optimizer, regs, lr = _search(lm, method, prompt.length, budget.restarts, allowed, init_ids, keep, seed)
    discrete = method.project if isinstance(method, Embed) else True

    watch = _Watch(param, target_ids, keep, discrete and budget.stop_on_success and bool(target_ids), start)
    policies = [PerItem(stop=watch, keep_best=True)]
    if budget.time_limit is not None:
        policies.append(TimeLimit(budget.time_limit, since=start))  # counted from the call, set-up included
    if progress:
        policies.append(ProgressBar("fvis invert", postfix=watch.postfix))
    result = optimize(ctx, objective, param, regs, steps=budget.steps, lr=lr, optimizer=optimizer, seed=seed,
                      progress=False, policies=policies)

    ids = param.ids().cpu()
    evals = [evaluate_prompt(lm, row.tolist(), target_ids, prefix_ids, suffix_ids, allowed,
                             None if target_ids else objective) for row in ids]
    key = (lambda e: (e.success, e.roundtrip, e.logp_target)) if target_ids else (lambda e: (e.roundtrip, e.value))
    ranked = sorted(evals, key=key, reverse=True)
    baseline = None
    if not target_ids:
        baseline = _baseline(lm, objective, allowed, prompt.length, prefix_ids, suffix_ids, seed)
    return Inversion(best=ranked[0], restarts=ranked, settings=settings, seconds=time.perf_counter() - start,
                     steps=result.steps, seconds_to_success=watch.success_at, stopped=watch.reason or result.stopped,
                     baseline=baseline, result=result)


def _with(settings, given: dict):
    given = {k: v for k, v in given.items() if v is not None}
    return replace(settings, **given) if given else settings


def _search(lm, method, length, restarts, allowed, init_ids, keep, seed):
    """The parameterization, optimizer factory, regularizers and learning rate of ``method``."""
    if isinstance(method, Embed):
        param = TokenEmbeddings(lm, length, restarts, allowed, init_ids, metric=method.snap, project=method.project,
                                hard_every=method.hard_every, seed=seed)
        regs = []
        if method.snap_weight:
            regs.append(Snap(lm.embedding.detach(), allowed, metric=method.snap, weight=method.snap_weight,
                             source=lambda x: param.embeddings))
        optimizer = lambda params: SnapSearch(params, param, method.lr, nearest=method.nearest,  # noqa: E731
                                              candidates=method.candidates, keep=keep, seed=seed, rule=method.rule,
                                              greedy=method.greedy)
        return param, optimizer, regs, method.lr
    param = OneHotTokens(lm, length, restarts, allowed, init_ids, seed=seed)
    optimizer = lambda params: GCG(params, param, topk=method.topk, candidates=method.candidates,  # noqa: E731
                                   keep=keep, seed=seed)
    return param, optimizer, [], 0.0


def _roundtrip_filter(lm: LanguageModel, prefix: list, suffix: list) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(N, K)`` ids -> ``(N,)`` bool: does ``prefix + ids + suffix`` survive decode -> encode?"""
    pre, suf = lm.decode(prefix), lm.decode(suffix)

    def keep(ids: torch.Tensor) -> torch.Tensor:
        rows = ids.tolist()
        texts = [pre + lm.decode(r) + suf for r in rows]
        enc = lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return torch.tensor([list(e) == prefix + r + suffix for e, r in zip(enc, rows)], dtype=torch.bool)

    return keep


class _Watch:
    """The per-item ``stop`` callable: success of the current real-token prompts (greedy target
    and round-trip); it also keeps the best value so far for the progress bar."""

    def __init__(self, param, target, roundtrip, use_success, start):
        self.param, self.target, self.roundtrip = param, target, roundtrip
        self.use_success, self.start = use_success, start
        self.best = -math.inf
        self.success_at: float | None = None
        self.reason: str | None = None

    def __call__(self, acts, values):
        b = values.shape[0]
        self.best = max(self.best, float(values.max()))
        done = torch.zeros(b, dtype=torch.bool, device=values.device)
        if self.use_success:
            n = len(self.target)
            greedy = acts[OUTPUT][:, -n:].argmax(-1)
            hit = (greedy == torch.tensor(self.target, device=greedy.device)).all(1)
            if hit.any():
                rows = hit.nonzero().flatten()
                ok = self.roundtrip(self.param.ids()[rows].cpu())
                if ok.any():
                    self.success_at = time.perf_counter() - self.start
                    self.reason = "success"
                    return torch.ones(b, dtype=torch.bool, device=values.device)
        return done

    def postfix(self, run) -> dict:
        """The progress bar's label: the best p(target) (or objective) so far."""
        if self.target:
            return {"best p(target)": f"{math.exp(self.best):.3g}"}
        return {"best objective": f"{self.best:.3g}"}


@torch.no_grad()
def _baseline(lm, objective, allowed, length, prefix, suffix, seed, n: int = 32) -> float:
    """Median of ``objective`` over ``n`` random allowed prompts (a reference for neuron results)."""
    g = torch.Generator().manual_seed(seed + 1)
    ids = _init_ids(allowed, n, length, None, g).to(lm.device)
    ctx = lm.with_context(prefix, suffix, tail=[], keep=1)
    with frozen(lm), Capture(ctx, objective.layers) as cap:
        values = objective(cap.forward(lm.embed(ids).float()))
    return float(values.median())


def print_summary(inv: Inversion, top: int = 5, file=None) -> None:
    """Best prompts with their target probability (or objective value)."""
    target = inv.settings.get("target")
    for i, e in enumerate(inv.restarts[:top]):
        if target is not None:
            flag = "SUCCESS" if e.success else "no"
            print(f"{i + 1}. {e.text!r}  p(target)={e.p_target:.4g} rank={e.rank} {flag}"
                  f"{'' if e.roundtrip else ' (does not round-trip)'}", file=file)
        else:
            print(f"{i + 1}. {e.text!r}  value={e.value:.4g}{'' if e.roundtrip else ' (does not round-trip)'}",
                  file=file)
