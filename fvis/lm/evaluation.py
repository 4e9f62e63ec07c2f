"""Honest judgement of a discrete prompt (:func:`evaluate_prompt`): decoded to text, re-tokenized
(round-trip check) and run as real tokens."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from ..hooks import Capture, frozen
from .model import LanguageModel
from .vocab import _norm


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
