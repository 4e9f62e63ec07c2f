"""Prompt inversion and feature visualization for causal language models, on :func:`fvis.optimize`.

Find a K-token prompt that makes the model emit a target text (or drives a neuron), two ways,
both through the one engine loop:

* ``method="embed"``: continuous prompt embeddings (:class:`TokenEmbeddings`, K positions x R
  restarts as the batch) with the PEZ projection: the forward runs at the nearest allowed
  vocabulary embeddings (real tokens), the gradient moves the continuous embeddings
  (:class:`SnapSearch`: normalized gradient steps, or Adam), and a *scored snap* picks, among the
  ``nearest`` vocabulary neighbours of the moved embeddings, the best-scoring real-token prompt and
  hard-snaps to it. Optional snapping penalty (:class:`regularizers.Snap`, cosine or L2, with a
  weight schedule) and periodic hard snaps. With ``candidates=0, rule="adam"`` it is plain PEZ.
* ``method="gcg"``: greedy coordinate gradient search (:class:`GCG`, a ``torch.optim.Optimizer``)
  over a one-hot relaxation (:class:`OneHotTokens`): the gradient w.r.t. the one-hot picks top-k
  swaps per position; a batch of sampled single-token swaps is scored exactly.

Vocabulary constraints (:func:`allowed_tokens`): no special tokens, no tokens that do not decode to
clean text, never the target token nor tokens that prefix-match it, optionally ASCII only.
Results are judged honestly (:func:`evaluate_prompt`): the prompt is decoded to text,
re-tokenized (round-trip check) and run as real tokens.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

import objectives.language as lang
from regularizers.snap import Snap

from .engine import optimize
from .errors import FvisError
from .hooks import OUTPUT, Capture, frozen
from .lm import LanguageModel
from .policies import PerItem, ProgressBar, TimeLimit
from .search import GCG, SnapSearch
from .tokens import OneHotTokens, TokenEmbeddings, _init_ids, _norm, allowed_tokens  # also their old import path

METHODS = ("embed", "gcg")

@dataclass
class PromptEval:
    """Metrics of one discrete prompt, measured on the re-tokenized text (what a user would run)."""

    text: str
    ids: list
    roundtrip: bool
    retokenized: list
    success: bool = False
    p_target: float | None = None
    logp_target: float | None = None
    rank: list | None = None
    greedy: str | None = None
    perplexity: float | None = None
    contains_target: bool = False
    banned_tokens: list = field(default_factory=list)
    value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_prompt(lm: LanguageModel, ids: Sequence[int], target: Sequence[int] = (), prefix: Sequence[int] = (),
                    suffix: Sequence[int] = (), allowed: torch.Tensor | None = None, objective=None) -> PromptEval:
    """Judge a discrete prompt honestly: decode ``prefix + ids + suffix`` to text, re-tokenize
    (``roundtrip``: same ids), run the model on the re-tokenized text and the teacher-forced target:
    ``success`` = the greedy next token(s) equal ``target``; ``p_target``, ``rank`` (1 = top) per
    target token, the prompt's ``perplexity`` (its tokens after the first given everything before;
    all of them when there is a prefix), ``contains_target`` (normalized text), and the tokens of
    the prompt that ``allowed`` bans. With ``objective`` (e.g. a neuron), ``value`` is its value on
    the re-tokenized prompt."""
    ids, target, prefix, suffix = list(map(int, ids)), list(map(int, target)), list(map(int, prefix)), list(map(int, suffix))
    with frozen(lm):
        prompt_text = lm.decode(ids)
        full_text = lm.decode(prefix) + prompt_text + lm.decode(suffix)
        retok = lm.encode(full_text)
        ev = PromptEval(text=prompt_text, ids=ids, roundtrip=retok == prefix + ids + suffix, retokenized=retok)
        if allowed is not None:
            ev.banned_tokens = [i for i in ids if not bool(allowed[i])]
        # perplexity of the prompt tokens on the re-tokenized prefix + prompt
        head = lm.encode(lm.decode(prefix) + prompt_text)
        start = max(len(prefix), 1)
        if len(head) > start:
            logits = lm.logits_of_ids(head).float()
            logp = torch.log_softmax(logits[0, :-1], -1).gather(-1, torch.tensor(head[1:], device=logits.device)[:, None])
            ev.perplexity = float(torch.exp(-logp[start - 1:].mean()))
        if target:
            seq = retok + target[:-1]
            logits = lm.logits_of_ids(seq, keep=len(target)).float()[0]  # (n, V)
            logp = torch.log_softmax(logits, -1)
            t = torch.tensor(target, device=logp.device)
            lp = logp.gather(-1, t[:, None]).squeeze(1)
            ev.logp_target = float(lp.sum())
            ev.p_target = float(lp.sum().exp())
            ev.rank = [int((logp[j] > lp[j]).sum()) + 1 for j in range(len(target))]
            greedy = logits.argmax(-1).tolist()
            ev.success = greedy == target
            ev.greedy = lm.decode(greedy)
            goal = _norm(lm.decode(target))
            ev.contains_target = bool(goal) and goal in _norm(prompt_text)
        if objective is not None:
            ctx = lm.with_context(prefix=[], suffix=[], tail=[], keep=1)
            x = lm.embed(retok)[None].float()
            with Capture(ctx, objective.layers) as cap:
                ev.value = float(objective(cap.forward(x))[0])
    return ev


# -- inversion ------------------------------------------------------------------------------------


@dataclass
class Inversion:
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


EMBED_DEFAULTS = dict(lr=10.0, snap_weight=0.0, hard_every=0, candidates=64, nearest=64, snap="l2")
GCG_DEFAULTS = dict(topk=128, candidates=64)


def invert(lm: LanguageModel, target: str | None = None, *, objective=None, length: int = 3, restarts: int = 1,
           steps: int = 200, method: str = "embed", snap: str | None = None, prefix: str = "", suffix: str = "",
           init: str | None = None, ascii_only: bool = False, seed: int = 0, lr: float | None = None,
           snap_weight: float | None = None, project: bool = True, hard_every: int | None = None,
           topk: int | None = None, candidates: int | None = None, nearest: int | None = None, rule: str = "normalized", greedy: bool = False, time_limit: float | None = None,
           stop_on_success: bool = True, progress: bool = True) -> Inversion:
    """Find a ``length``-token prompt (between fixed ``prefix`` and ``suffix`` text) that makes
    ``lm`` emit ``target`` next (or maximizes ``objective``, e.g. a neuron), with ``restarts``
    prompts optimized as one batch by :func:`fvis.optimize`.

    ``method="embed"``: continuous embeddings moved by ``rule`` (``"normalized"`` gradient steps of
    size ``lr`` per position, or ``"adam"``), forward at the snapped point (``project``, PEZ),
    scored snap among the ``nearest`` (``snap`` metric) vocabulary neighbours (``candidates`` per
    restart per step; ``greedy``: only when better), optional snapping penalty (``snap_weight``)
    and hard snaps every ``hard_every`` steps. ``method="gcg"``: greedy coordinate gradient (``topk``, ``candidates``
    per restart per step). The run stops early when a restart succeeds on its real tokens
    (``stop_on_success``; target only) or after ``time_limit`` seconds. Every restart is then
    judged on its decoded-and-re-tokenized text (:func:`evaluate_prompt`); restarts are ranked by
    (success, round-trip, p(target) or objective value).
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise FvisError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if (target is None) == (objective is None):
        raise FvisError("give exactly one of a target text or an objective (e.g. a neuron)")
    if length < 1:
        raise FvisError(f"prompt length must be >= 1, got {length}")
    if restarts < 1 or steps < 1:
        raise FvisError(f"restarts and steps must be >= 1, got {restarts} and {steps}")
    snap = EMBED_DEFAULTS["snap"] if snap is None else snap
    nearest = EMBED_DEFAULTS["nearest"] if nearest is None else nearest
    if snap not in ("cosine", "l2"):
        raise FvisError(f"snap must be 'cosine' or 'l2', got {snap!r}")
    prefix_ids, suffix_ids = lm.encode(prefix) if prefix else [], lm.encode(suffix) if suffix else []
    target_ids: list[int] = []
    if target is not None:
        if not isinstance(target, str) or not target:
            raise FvisError("the target text is empty")
        target_ids = lm.encode(target)
        if not target_ids:
            raise FvisError(f"target {target!r} tokenizes to nothing")
        objective = lang.target_logprob(target_ids, name="logp(target)")
        ctx = lm.with_context(prefix_ids, suffix_ids, tail=target_ids[:-1], keep=len(target_ids))
    else:
        ctx = lm.with_context(prefix_ids, suffix_ids, tail=[], keep=1)
    allowed = allowed_tokens(lm, target, ascii_only=ascii_only)
    init_ids = None
    if init:
        init_ids = lm.encode(init)
        if len(init_ids) != length:
            raise FvisError(f"--init {init!r} is {len(init_ids)} tokens; the prompt length is {length}")

    settings = {"model": lm.name, "target": target, "target_ids": target_ids, "objective": objective.name,
                "method": method, "length": length, "restarts": restarts, "steps": steps, "prefix": prefix,
                "suffix": suffix, "init": init, "ascii_only": ascii_only, "seed": seed,
                "allowed_tokens": int(allowed.sum()), "time_limit": time_limit}
    regs = []
    if method == "embed":
        lr = EMBED_DEFAULTS["lr"] if lr is None else lr
        snap_weight = EMBED_DEFAULTS["snap_weight"] if snap_weight is None else snap_weight
        hard_every = EMBED_DEFAULTS["hard_every"] if hard_every is None else hard_every
        param = TokenEmbeddings(lm, length, restarts, allowed, init_ids, metric=snap, project=project,
                                hard_every=hard_every, seed=seed)
        if snap_weight:
            regs.append(Snap(lm.embedding.detach(), allowed, metric=snap, weight=snap_weight,
                             source=lambda x: param.embeddings))
        candidates = EMBED_DEFAULTS["candidates"] if candidates is None else candidates
        keep = _roundtrip_filter(lm, prefix_ids, suffix_ids)
        optimizer = lambda params: SnapSearch(params, param, lr, nearest=nearest, candidates=candidates,  # noqa: E731
                                              keep=keep, seed=seed, rule=rule, greedy=greedy)
        settings.update(lr=lr, snap=snap, snap_weight=snap_weight, project=project, hard_every=hard_every,
                        candidates=candidates, nearest=nearest)
        discrete = project
    else:
        topk = GCG_DEFAULTS["topk"] if topk is None else topk
        candidates = GCG_DEFAULTS["candidates"] if candidates is None else candidates
        param = OneHotTokens(lm, length, restarts, allowed, init_ids, seed=seed)
        keep = _roundtrip_filter(lm, prefix_ids, suffix_ids)
        optimizer = lambda params: GCG(params, param, topk=topk, candidates=candidates, keep=keep, seed=seed)  # noqa: E731
        lr = 0.0
        settings.update(topk=topk, candidates=candidates)
        discrete = True

    roundtrip = _roundtrip_filter(lm, prefix_ids, suffix_ids)
    watch = _Watch(param, target_ids, roundtrip, discrete and stop_on_success and bool(target_ids), start)
    policies = [PerItem(stop=watch, keep_best=True)]
    if time_limit is not None:
        policies.append(TimeLimit(time_limit, since=start))  # counted from the call, set-up included
    if progress:
        policies.append(ProgressBar("fvis invert", postfix=watch.postfix))
    result = optimize(ctx, objective, param, regs, steps=steps, lr=lr, optimizer=optimizer, seed=seed,
                      progress=False, policies=policies)

    ids = param.ids().cpu()
    evals = [evaluate_prompt(lm, row.tolist(), target_ids, prefix_ids, suffix_ids, allowed,
                             None if target_ids else objective) for row in ids]
    key = (lambda e: (e.success, e.roundtrip, e.logp_target)) if target_ids else (lambda e: (e.roundtrip, e.value))
    ranked = sorted(evals, key=key, reverse=True)
    baseline = None
    if not target_ids:
        baseline = _baseline(lm, objective, allowed, length, prefix_ids, suffix_ids, seed)
    return Inversion(best=ranked[0], restarts=ranked, settings=settings, seconds=time.perf_counter() - start,
                     steps=result.steps, seconds_to_success=watch.success_at, stopped=watch.reason or result.stopped,
                     baseline=baseline, result=result)


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
