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
import time
from dataclasses import dataclass, fields, replace
from typing import Callable, Sequence

import torch


import objectives.language as lang
from regularizers.snap import Snap

from ..engine import optimize
from ..errors import FvisError, suggest
from ..hooks import Capture, frozen
from ..inline import Displayable, Panel
from ..optim import GCG, SnapSearch
from ..params import OneHotTokens, TokenEmbeddings
from ..params.tokens import _init_ids
from ..policies import PerItem, ProgressBar, TimeLimit
from .evaluation import PromptEval, evaluate_prompt
from .model import LanguageModel
from .settings import Budget, Embed, Gcg, Prompt, check_targets, search_method
from .success import SuccessWatch
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
    harvested: list | None = None

    def as_dict(self) -> dict:
        return {"best": self.best.as_dict(), "restarts": [r.as_dict() for r in self.restarts],
                "settings": self.settings, "seconds": self.seconds, "steps": self.steps,
                "seconds_to_success": self.seconds_to_success, "stopped": self.stopped,
                "baseline": self.baseline,
                **({"harvested": [h.as_dict() for h in self.harvested]} if self.harvested is not None else {})}

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
    round-trip, p(target) or objective value). Many targets in one batch: :func:`invert_many`.
    """
    if (target is None) == (objective is None):
        raise FvisError("give exactly one of a target text or an objective (e.g. a neuron)")
    if target is not None:
        return invert_many(lm, [target], prompt=prompt, method=method, budget=budget, seed=seed, progress=progress,
                           **options)[0]
    start = time.perf_counter()
    prompt, budget, method = _settings(prompt, budget, method, options)
    prefix_ids, suffix_ids, init_ids = _context_ids(lm, prompt)
    ctx = lm.with_context(prefix_ids, suffix_ids, tail=[], keep=1)
    allowed = allowed_tokens(lm, None, ascii_only=prompt.ascii_only)
    settings = _describe(lm, prompt, budget, method, seed, allowed, target=None, target_ids=[],
                         objective=objective.name)
    param, result, watch = _optimize(lm, ctx, objective, prompt, budget, method, allowed, init_ids, seed, progress,
                                     None, start)
    evals = [evaluate_prompt(lm, row.tolist(), [], prefix_ids, suffix_ids, allowed, objective)
             for row in param.ids().cpu()]
    ranked = sorted(evals, key=lambda e: (e.roundtrip, e.value), reverse=True)
    baseline = _baseline(lm, objective, allowed, prompt.length, prefix_ids, suffix_ids, seed)
    return Inversion(best=ranked[0], restarts=ranked, settings=settings, seconds=time.perf_counter() - start,
                     steps=result.steps, seconds_to_success=None, stopped=result.stopped, baseline=baseline,
                     result=result)


def invert_many(lm: LanguageModel, targets: Sequence[str], *, prompt: Prompt | None = None,
                method: str | Embed | Gcg = "embed", budget: Budget | None = None, seed: int = 0,
                progress: bool = True, each: bool = False, harvest: dict | None = None,
                on_found: Callable[[str, list], None] | None = None, patience: int = 40,
                shared_time_limit: bool = False, **options) -> list[Inversion]:
    """:func:`invert` for many ``targets`` at once: every (target, restart) pair is one batch item
    of one :func:`fvis.optimize` run, scored against its own target; finished items leave the
    batch (no forward, no candidates). Returns one :class:`Inversion` per target, in order.

    ``budget.stop_on_success``: a target is finished when one of its restarts succeeds on its real
    tokens (``each=True``: every restart finishes on its own success, for studies that want many
    prompts per target); the run ends when all are finished or at ``budget.time_limit``.
    The prompt vocabulary bans every target's tokens (the union of :func:`allowed_tokens` bans).
    Targets of several tokens share a batch when they differ in their last token only (the
    teacher-forced tail is the model's); others run as further batches, one after another, each
    with the full time limit (``shared_time_limit=True``: all batches together within it).

    ``harvest`` (``{target: n}``): collect up to n distinct successful prompts per target in the
    same run: each success (greedy target on the real tokens, text round-trip) is recorded
    (``on_found(target, ids)`` is called at once; after the run each is judged again by
    :func:`evaluate_prompt`: ``inversion.harvested``) and its item restarts from a fresh random
    prompt; an item without success for ``patience`` steps restarts too; a target's items leave
    the batch once it has n; the run ends when all have theirs.
    """
    start = time.perf_counter()
    prompt, budget, method = _settings(prompt, budget, method, options)
    targets = check_targets(targets)
    prefix_ids, suffix_ids, init_ids = _context_ids(lm, prompt)
    ids = {}
    for t in targets:
        ids[t] = lm.encode(t)
        if not ids[t]:
            raise FvisError(f"target {t!r} tokenizes to nothing")
    allowed = allowed_tokens(lm, None, ascii_only=prompt.ascii_only)
    own = {t: allowed_tokens(lm, t, ascii_only=prompt.ascii_only) for t in targets}
    for mask in own.values():
        allowed = allowed & mask
    groups: dict[tuple, list[str]] = {}
    for t in targets:
        groups.setdefault(tuple(ids[t][:-1]), []).append(t)
    out: dict[str, Inversion] = {}
    for tail, group in groups.items():
        t0 = start if len(out) == 0 else time.perf_counter()
        n = len(tail) + 1
        item_target = torch.tensor([ids[t] for t in group for _ in range(budget.restarts)], dtype=torch.long)
        owner = torch.arange(len(group)).repeat_interleave(budget.restarts)
        objective = lang.target_logprob(item_target if len(group) > 1 else ids[group[0]], name="logp(target)")
        ctx = lm.with_context(prefix_ids, suffix_ids, tail=list(tail), keep=n)
        group_budget = replace(budget, restarts=len(group) * budget.restarts)
        if shared_time_limit and budget.time_limit is not None and out:  # later batches: what is left (the
            # first batch's clock already starts with the call, t0 = start); at least one step
            group_budget = replace(group_budget, time_limit=max(budget.time_limit - (time.perf_counter() - start), 1e-3))
        watch = SuccessWatch(item_target, owner, None, budget.stop_on_success and _discrete(method), each, t0)
        if harvest is not None:
            watch.harvest_into([harvest.get(t, 0) for t in group], allowed, prompt.length, seed, patience,
                               None if on_found is None else lambda g, row: on_found(group[g], row))
        param, result, watch = _optimize(lm, ctx, objective, prompt, group_budget, method, allowed, init_ids, seed,
                                         progress, watch, t0)
        rows = param.ids().cpu()
        for g, t in enumerate(group):
            evals = [evaluate_prompt(lm, rows[i].tolist(), ids[t], prefix_ids, suffix_ids, own[t])
                     for i in (owner == g).nonzero().flatten().tolist()]
            ranked = sorted(evals, key=lambda e: (e.success, e.roundtrip, e.logp_target), reverse=True)
            settings = _describe(lm, prompt, budget, method, seed, allowed, target=t, target_ids=ids[t],
                                 objective="logp(target)", batch=len(group) * budget.restarts)
            found = watch.success_at.get(g)
            out[t] = Inversion(best=ranked[0], restarts=ranked, settings=settings,
                               seconds=time.perf_counter() - t0, steps=result.steps, seconds_to_success=found,
                               stopped="success" if found is not None and not each and harvest is None else result.stopped,
                               result=result, harvested=None if harvest is None else
                               [evaluate_prompt(lm, row, ids[t], prefix_ids, suffix_ids, own[t])
                                for row in watch.harvested.get(g, [])])
    return [out[t] for t in targets]


def _settings(prompt, budget, method, options):
    known = _PROMPT | _BUDGET | {f.name for f in fields(Embed)} | {f.name for f in fields(Gcg)}
    for name in options:
        if name not in known:
            raise FvisError(f"invert() has no setting {name!r}.{suggest(name, sorted(known))}")
    prompt = _with(prompt or Prompt(), {k: v for k, v in options.items() if k in _PROMPT})
    budget = _with(budget or Budget(), {k: v for k, v in options.items() if k in _BUDGET})
    method = search_method(method, **{k: v for k, v in options.items() if k not in _PROMPT | _BUDGET})
    return prompt, budget, method


def _context_ids(lm, prompt):
    prefix_ids = lm.encode(prompt.prefix) if prompt.prefix else []
    suffix_ids = lm.encode(prompt.suffix) if prompt.suffix else []
    init_ids = None
    if prompt.init:
        init_ids = lm.encode(prompt.init)
        if len(init_ids) != prompt.length:
            raise FvisError(f"--init {prompt.init!r} is {len(init_ids)} tokens; the prompt length is {prompt.length}")
    return prefix_ids, suffix_ids, init_ids


def _describe(lm, prompt, budget, method, seed, allowed, **extra) -> dict:
    return {"model": lm.name, **{k: extra.pop(k) for k in ("target", "target_ids", "objective")},
            "method": method.name, "length": prompt.length, "restarts": budget.restarts, "steps": budget.steps,
            "prefix": prompt.prefix, "suffix": prompt.suffix, "init": prompt.init,
            "ascii_only": prompt.ascii_only, "seed": seed, "allowed_tokens": int(allowed.sum()),
            "time_limit": budget.time_limit, **method.settings(), **extra}


def _discrete(method) -> bool:
    return method.project if isinstance(method, Embed) else True


def _optimize(lm, ctx, objective, prompt, budget, method, allowed, init_ids, seed, progress, watch, start):
    """One :func:`fvis.optimize` run of ``budget.restarts`` items; ``watch``: the per-item success
    test (``None``: no stop). Returns the parameterization, the engine's result and the watch."""
    keep = _roundtrip_filter(lm, ctx.prefix, ctx.suffix)
    per_item = PerItem(keep_best=True, skip_done=True)
    active = lambda: ~per_item.done  # noqa: E731  (finished items get no candidates)
    param, optimizer, regs, lr = _search(lm, method, prompt.length, budget.restarts, allowed, init_ids, keep, seed,
                                         active)
    watch = watch or SuccessWatch(None, None, None, False, False, start)
    watch.param, watch.roundtrip = param, keep
    per_item.stop = watch
    policies = [per_item, watch]
    if budget.time_limit is not None:
        policies.append(TimeLimit(budget.time_limit, since=start))  # counted from the call, set-up included
    if progress:
        policies.append(ProgressBar("fvis invert", postfix=watch.postfix))
    result = optimize(ctx, objective, param, regs, steps=budget.steps, lr=lr, optimizer=optimizer, seed=seed,
                      progress=False, policies=policies)
    return param, result, watch


def _with(settings, given: dict):
    given = {k: v for k, v in given.items() if v is not None}
    return replace(settings, **given) if given else settings


def _search(lm, method, length, restarts, allowed, init_ids, keep, seed, active=None):
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
                                              greedy=method.greedy, active=active)
        return param, optimizer, regs, method.lr
    param = OneHotTokens(lm, length, restarts, allowed, init_ids, seed=seed)
    optimizer = lambda params: GCG(params, param, topk=method.topk, candidates=method.candidates,  # noqa: E731
                                   keep=keep, seed=seed, active=active)
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
