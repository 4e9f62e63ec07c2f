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
from torch import nn
from tqdm.auto import tqdm

from .engine import optimize
from .errors import FvisError
from .hooks import OUTPUT, Capture, frozen
from .lm import LanguageModel
from .param import Parameterization

METHODS = ("embed", "gcg")

# -- vocabulary -----------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return text.strip().lower()


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


# -- parameterizations ----------------------------------------------------------------------------


class _StraightThrough(torch.autograd.Function):
    """Forward: the snapped embeddings exactly; backward: the gradient goes to the continuous ones."""

    @staticmethod
    def forward(ctx, continuous, snapped):
        return snapped.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _init_ids(allowed: torch.Tensor, restarts: int, length: int, init: torch.Tensor | None,
              generator: torch.Generator) -> torch.Tensor:
    pool = allowed.nonzero().flatten().cpu()
    ids = pool[torch.randint(len(pool), (restarts, length), generator=generator)]
    if init is not None:
        init = torch.as_tensor(init, dtype=torch.long).cpu()
        init = init[None] if init.dim() == 1 else init
        if init.shape[-1] != length:
            raise FvisError(f"initial prompt has {init.shape[-1]} tokens but the prompt length is {length}")
        ids[: init.shape[0]] = init[:restarts]
    return ids


class TokenEmbeddings(Parameterization):
    """Continuous prompt embeddings ``() -> (R, K, D)`` for R restarts of K positions.

    Args:
        lm: the :class:`LanguageModel` (its embedding table is used, never copied or changed).
        length: K. restarts: R (the batch).
        allowed: ``(V,)`` bool mask of usable tokens (default: all rows).
        init: token ids ``(K,)`` or ``(r, K)`` for the first restarts; the others start at random
            allowed tokens (seeded by ``seed``).
        metric: ``"cosine"`` or ``"l2"`` nearest-token metric.
        project: PEZ: the forward returns the nearest allowed embeddings exactly (real tokens),
            gradients update the continuous embeddings (straight-through).
        hard_every: every N optimizer steps, set the continuous embeddings to their snapped point (0: never).
    """

    def __init__(self, lm: LanguageModel, length: int, restarts: int = 1, allowed: torch.Tensor | None = None,
                 init: torch.Tensor | None = None, metric: str = "cosine", project: bool = True,
                 hard_every: int = 0, seed: int | None = 0):
        super().__init__()
        from regularizers.snap import METRICS

        if length < 1 or restarts < 1:
            raise FvisError(f"prompt length and restarts must be >= 1, got {length} and {restarts}")
        if metric not in METRICS:
            raise FvisError(f"snap metric must be one of {', '.join(METRICS)}, got {metric!r}")
        table = lm.embedding
        object.__setattr__(self, "table", table.detach())  # plain attribute: never in state_dict
        self.allowed = allowed if allowed is not None else torch.ones(table.shape[0], dtype=torch.bool)
        self.metric, self.project, self.hard_every = metric, project, int(hard_every)
        self.shape = (restarts, length, table.shape[1])
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        ids = _init_ids(self.allowed, restarts, length, init, g).to(table.device)
        self.embeddings = nn.Parameter(self.table[ids].clone().float())
        self.steps = 0

    def ids(self) -> torch.Tensor:
        """``(R, K)`` nearest allowed token ids of the current embeddings."""
        from regularizers.snap import nearest

        return nearest(self.embeddings, self.table, self.allowed, self.metric)

    def forward(self) -> torch.Tensor:
        if not self.project:
            return self.embeddings
        snapped = self.table[self.ids()].to(self.embeddings.dtype)
        return _StraightThrough.apply(self.embeddings, snapped)

    @torch.no_grad()
    def after_step(self) -> None:
        self.steps += 1
        if self.hard_every and self.steps % self.hard_every == 0:
            self.embeddings.copy_(self.table[self.ids()])


class OneHotTokens(Parameterization):
    """A one-hot relaxation of R prompts of K tokens: ``() -> (R, K, D) = onehot @ table``.
    The one-hot ``(R, K, V)`` stays exactly one-hot (only :class:`GCG` changes it)."""

    def __init__(self, lm: LanguageModel, length: int, restarts: int = 1, allowed: torch.Tensor | None = None,
                 init: torch.Tensor | None = None, seed: int | None = 0):
        super().__init__()
        if length < 1 or restarts < 1:
            raise FvisError(f"prompt length and restarts must be >= 1, got {length} and {restarts}")
        table = lm.embedding
        object.__setattr__(self, "table", table.detach())
        self.allowed = allowed if allowed is not None else torch.ones(table.shape[0], dtype=torch.bool)
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        ids = _init_ids(self.allowed, restarts, length, init, g).to(table.device)
        self.onehot = nn.Parameter(nn.functional.one_hot(ids, table.shape[0]).float())
        self.shape = (restarts, length, table.shape[1])

    def ids(self) -> torch.Tensor:
        return self.onehot.argmax(-1)

    @torch.no_grad()
    def set_ids(self, ids: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        rows = torch.arange(ids.shape[0]) if rows is None else rows
        self.onehot[rows] = nn.functional.one_hot(ids, self.onehot.shape[-1]).to(self.onehot.dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` ids -> ``(N, K, D)`` embeddings (what the forward gives for those one-hots)."""
        return self.table[ids].to(self.onehot.dtype)

    def forward(self) -> torch.Tensor:
        return self.onehot @ self.table.to(self.onehot.dtype)


class GCG(torch.optim.Optimizer):
    """Greedy coordinate gradient (Zou et al. 2023) as an optimizer for :class:`OneHotTokens`.

    Each ``step(score)``: from the one-hot gradient, the ``topk`` most promising allowed tokens
    per position; ``candidates`` single-token swaps per restart sampled from them (position
    uniform); candidates failing ``keep(ids) -> (N,) bool`` (e.g. the text round-trip) are
    dropped; all are scored exactly with ``score(embeddings) -> (N,)`` (higher is better, passed
    by :func:`fvis.optimize`); each restart moves to its best candidate (``greedy``: only if it
    beats the current prompt). ``lr`` is unused (kept for the optimizer interface).
    """

    scores_inputs = True  # fvis.optimize passes its scoring function to step()

    def __init__(self, params, param: OneHotTokens, topk: int = 128, candidates: int = 64, chunk: int = 512,
                 keep: Callable[[torch.Tensor], torch.Tensor] | None = None, greedy: bool = False, seed: int = 0):
        super().__init__(params, {"lr": 0.0})
        self.param, self.topk, self.candidates, self.chunk = param, int(topk), int(candidates), int(chunk)
        self.keep, self.greedy = keep, greedy
        self.generator = torch.Generator().manual_seed(seed)
        self.last_scores: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, score: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if score is None:
            raise FvisError("GCG needs a scoring function: run it through fvis.optimize")
        p = self.param
        grad = p.onehot.grad
        if grad is None:
            return None
        r, k, v = p.onehot.shape
        cur = p.ids()
        masked = grad.masked_fill(~p.allowed.to(grad.device), torch.inf)
        top = (-masked).topk(min(self.topk, int(p.allowed.sum())), dim=-1).indices  # (R, K, topk)
        c = self.candidates
        pos = torch.randint(k, (r, c), generator=self.generator).to(cur.device)
        pick = torch.randint(top.shape[-1], (r, c), generator=self.generator).to(cur.device)
        rows = torch.arange(r, device=cur.device)[:, None].expand(r, c)
        new = top[rows, pos, pick]  # (R, C)
        cand = cur[:, None, :].repeat(1, c, 1)
        cand.scatter_(2, pos[..., None], new[..., None])
        if self.greedy:
            cand = torch.cat([cur[:, None, :], cand], 1)  # the current prompt competes too
        flat = cand.reshape(-1, k)
        ok = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
        if self.keep is not None:
            ok = torch.as_tensor(self.keep(flat), dtype=torch.bool, device=flat.device)
        values = torch.full((flat.shape[0],), -torch.inf, device=flat.device)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(p.embed(flat[part])).float()
        values = values.view(r, -1)
        best = values.argmax(1)
        found = torch.isfinite(values[torch.arange(r), best])  # a restart with no valid candidate stays
        if found.any():
            chosen = cand[torch.arange(r), best]
            p.set_ids(chosen[found], torch.arange(r, device=cur.device)[found])
        self.last_scores = values.max(1).values
        return None


class SnapSearch(torch.optim.Optimizer):
    """The embed method's optimizer for :class:`TokenEmbeddings`.

    ``step(score)``: move the continuous embeddings (``rule="normalized"``: ``e -= lr * g / |g|``
    per position, so for L2 snapping the nearest tokens of the moved point trade closeness against
    first-order gain; ``rule="adam"``: Adam with ``lr``); then a *scored snap*: ``candidates``
    prompts per restart, made from the current snapped prompt by replacing one (and for half of
    them a second) position with one of the ``nearest`` allowed tokens of that position's moved
    embedding, are filtered by ``keep`` (text round-trip) and scored exactly with ``score``
    (passed by :func:`fvis.optimize`); each restart hard-snaps the changed positions to its best
    candidate (``greedy``: only if it beats the current prompt). ``candidates=0``: no scored snap
    (with ``rule="adam"``: plain PEZ).
    """

    scores_inputs = True

    def __init__(self, params, param: TokenEmbeddings, lr: float, nearest: int = 16, candidates: int = 32,
                 chunk: int = 512, keep: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                 rule: str = "normalized", greedy: bool = True):
        params = list(params)
        self.greedy = greedy
        super().__init__(params, {"lr": lr})
        self.rule, self.lr = rule, lr
        self.inner = torch.optim.Adam(params, lr=lr) if rule == "adam" else None
        self.param, self.nearest, self.candidates, self.chunk, self.keep = param, nearest, candidates, chunk, keep
        self.generator = torch.Generator().manual_seed(seed)

    def zero_grad(self, set_to_none: bool = True):
        (self.inner or super()).zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, score: Callable[[torch.Tensor], torch.Tensor] | None = None):
        p = self.param
        if self.inner is not None:
            self.inner.step()
        elif p.embeddings.grad is not None:  # normalized gradient step per position
            g = p.embeddings.grad
            p.embeddings.sub_(self.lr * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if not self.candidates or score is None:
            return None
        import torch.nn.functional as F

        e = p.embeddings.detach()
        r, k, _ = e.shape
        table = p.table
        if p.metric == "cosine":
            sims = F.normalize(e.reshape(-1, e.shape[-1]), dim=-1) @ F.normalize(table.float(), dim=-1).T
        else:
            flat = e.reshape(-1, e.shape[-1])
            sims = flat @ table.float().T - 0.5 * table.float().pow(2).sum(-1)
        sims.masked_fill_(~p.allowed.to(sims.device), -torch.inf)
        near = sims.topk(self.nearest, dim=1).indices.view(r, k, self.nearest)
        cur = p.ids()
        c = self.candidates
        g = self.generator
        cand = cur[:, None, :].repeat(1, c, 1)
        rows = torch.arange(r)[:, None].expand(r, c)
        for _ in range(2 if k > 1 else 1):  # change one position, and half of the candidates a second one
            pos = torch.randint(k, (r, c), generator=g)
            pick = torch.randint(self.nearest, (r, c), generator=g)
            new = near[rows, pos, pick]
            if _ == 1:
                skip = torch.rand((r, c), generator=g) < 0.5
                new = torch.where(skip, cand.gather(2, pos[..., None]).squeeze(-1), new)
            cand.scatter_(2, pos[..., None], new[..., None])
        cand = torch.cat([cur[:, None, :], cand], 1)
        flat = cand.reshape(-1, k)
        ok = torch.ones(flat.shape[0], dtype=torch.bool)
        if self.keep is not None:
            ok = torch.as_tensor(self.keep(flat), dtype=torch.bool)
        ok.view(r, -1)[:, 0] = True
        values = torch.full((flat.shape[0],), -torch.inf)
        idx = ok.nonzero().flatten()
        for s in range(0, len(idx), self.chunk):
            part = idx[s:s + self.chunk]
            values[part] = score(table[flat[part]].float()).float().cpu()
        values = values.view(r, -1)
        if not self.greedy:
            values[:, 0] = -torch.inf
        best = values.argmax(1)
        moved = (best > 0) & torch.isfinite(values.max(1).values)
        if moved.any():
            chosen = cand[torch.arange(r), best]
            changed = (chosen != cur) & moved[:, None]
            p.embeddings[changed] = table[chosen[changed]].to(p.embeddings.dtype)
        return None


# -- honest evaluation ----------------------------------------------------------------------------


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
    import objectives.language as lang
    from regularizers.snap import Snap

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
    watch = _Watch(param, target_ids, roundtrip, discrete and stop_on_success and bool(target_ids),
                   time_limit, steps, progress, start)
    try:
        result = optimize(ctx, objective, param, regs, steps=steps, lr=lr, optimizer=optimizer, seed=seed,
                          progress=False, stop=watch, keep_best=True)
    finally:
        watch.close()

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
    """The engine's ``stop`` callable: success of the current real-token prompts (greedy target and
    round-trip), time limit, and the progress bar with the best p(target) so far."""

    def __init__(self, param, target, roundtrip, use_success, time_limit, steps, progress, start):
        self.param, self.target, self.roundtrip = param, target, roundtrip
        self.use_success, self.time_limit, self.start = use_success, time_limit, start
        self.best = -math.inf
        self.success_at: float | None = None
        self.reason: str | None = None
        self.bar = tqdm(total=steps, disable=not progress, desc="fvis invert", unit="step", leave=False)

    def __call__(self, acts, values):
        b = values.shape[0]
        self.best = max(self.best, float(values.max()))
        label = "best p(target)" if self.target else "best objective"
        shown = math.exp(self.best) if self.target else self.best
        self.bar.update(1)
        self.bar.set_postfix({label: f"{shown:.3g}"})
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
        if self.time_limit is not None and time.perf_counter() - self.start > self.time_limit:
            self.reason = "time"
            return torch.ones(b, dtype=torch.bool, device=values.device)
        return done

    def close(self):
        self.bar.close()


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


def run_cli(args) -> None:
    """``fvis invert``: run :func:`invert`, write ``DIR/result.json``, print the best prompts."""
    from .io import check_writable
    from .lm import load_lm

    if args.length < 1:
        raise FvisError(f"--length must be >= 1, got {args.length}")
    if args.restarts < 1 or args.steps < 1:
        raise FvisError(f"--restarts and --steps must be >= 1, got {args.restarts} and {args.steps}")
    if args.target is not None and not args.target:
        raise FvisError("--target is empty")
    out = check_writable(args.out)
    lm = load_lm(args.model, device=args.device)
    objective = None
    if args.neuron:
        import objectives.language as lang

        position = args.position if args.position in lang.POSITIONS else _int(args.position, "--position")
        objective = lang.parse_neuron(lm, args.neuron, position)
    inv = invert(lm, args.target, objective=objective, length=args.length, restarts=args.restarts,
                 steps=args.steps, method=args.method, snap=args.snap, prefix=args.prefix, suffix=args.suffix,
                 init=args.init, ascii_only=args.ascii_only, seed=args.seed, lr=args.lr,
                 snap_weight=args.snap_weight, time_limit=args.time_limit, progress=not args.quiet)
    (out / "result.json").write_text(inv.to_json(), encoding="utf-8")
    print_summary(inv)
    extra = f"; random prompts' median {inv.baseline:.4g}" if inv.baseline is not None else ""
    print(f"{inv.settings['method']}: {inv.steps} steps, {inv.seconds:.1f} s{extra} -> {out}/result.json")


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FvisError(f"{flag} must be 'last', 'all' or an integer, got {text!r}") from None
