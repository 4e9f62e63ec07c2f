"""What a language model "thinks of" a word, Rumbelow-style: many prompts that make it emit each
target, collected in one batched run whose items restart after each success (:func:`collect`), and the tokens of those prompts ranked
against a baseline by log-odds (:func:`token_table`; :mod:`fvis.lm.logodds`): the prompts found
for the other targets, or random prompts when there is one target. :func:`write_study` writes
``prompts.jsonl``, ``tokens.csv``, ``tokens.json`` and the charts (:mod:`fvis.lm.study_charts`)."""
from __future__ import annotations

import csv
import io
import json
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import FvisError
from ..files import atomic_write
from ..params.tokens import _init_ids
from ..progress import progress_bar
from .inversion import invert_many
from .logodds import log_odds
from .model import LanguageModel
from .settings import Budget, Prompt, check_targets
from .study_charts import compare_chart, token_chart
from .vocab import allowed_tokens

PROMPTS = "prompts.jsonl"


@dataclass
class Study:
    """Successful real prompts per target (``prompts[target]``: dicts with ``text``, ``ids``,
    ``p_target``; unique texts), with the study's ``settings``, ``rounds`` and ``seconds``."""

    targets: list
    prompts: dict
    settings: dict = field(default_factory=dict)
    rounds: int = 0
    seconds: float = 0.0

    def counts(self, target: str) -> Counter:
        """Token id -> occurrences in the target's prompts."""
        return Counter(i for p in self.prompts[target] for i in p["ids"])


def collect(lm: LanguageModel, targets: Sequence[str], *, prompts: int = 50, restarts: int = 8,
            time_limit: float = 600.0, patience: int = 40, prompt: Prompt | None = None, method="embed",
            seed: int = 0, out: str | Path | None = None, progress: bool = True) -> Study:
    """Optimize ``restarts`` prompts per target, all targets in one batch (:func:`invert_many` in
    harvest mode): every success is recorded and its item starts again from a random prompt
    (as does an item stuck for ``patience`` steps), until every target has ``prompts`` distinct
    successful real prompts (judged again on the re-tokenized text) or ``time_limit`` seconds have
    passed. With ``out``, each prompt is appended to ``out/prompts.jsonl`` when found, and an
    interrupted study resumes from it."""
    targets = check_targets(targets)
    if prompts < 1 or restarts < 1 or patience < 1 or not time_limit > 0:
        raise FvisError(f"a study needs prompts, restarts and patience >= 1 and a time limit > 0, got {prompts}, "
                        f"{restarts}, {patience} and {time_limit}")
    prompt = prompt or Prompt()
    method_name = method if isinstance(method, str) else method.name
    same = {"model": lm.name, "method": method_name, "length": prompt.length, "prefix": prompt.prefix,
            "suffix": prompt.suffix}  # a record counts for this study only when all of these agree
    start = time.perf_counter()
    found: dict[str, dict[str, dict]] = {t: {} for t in targets}
    log = Path(out) / PROMPTS if out is not None else None
    rounds, foreign = _resume(lm, log, found, same, prompt) if log is not None and log.exists() else (0, [])

    def ok(t: str) -> int:  # successful prompts so far (those not yet judged again count until they are)
        return sum(r.get("success", True) is not False for r in found[t].values())

    bar = progress_bar(total=prompts * len(targets), desc="fvis lm-study", unit="prompt", show=progress)
    bar.update(sum(min(ok(t), prompts) for t in targets))

    def record(target: str, ids: list) -> None:
        text = lm.decode(ids)
        if text in found[target]:
            return
        rec = {"target": target, "text": text, "ids": ids, "round": rounds, **same}
        found[target][text] = rec
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        bar.update(1)

    while (todo := [t for t in targets if ok(t) < prompts]) and time.perf_counter() - start < time_limit:
        left = time_limit - (time.perf_counter() - start)
        runs = invert_many(lm, todo, prompt=prompt, method=method, seed=seed + 1000 * rounds, progress=False,
                           harvest={t: prompts - ok(t) for t in todo}, on_found=record, patience=patience,
                           budget=Budget(restarts=restarts, time_limit=left), shared_time_limit=True)
        for t, inv in zip(todo, runs):
            for e in inv.harvested:  # judged again on the re-tokenized text
                if e.text in found[t]:
                    found[t][e.text].update(p_target=e.p_target, success=bool(e.success and e.roundtrip))
        if log is not None:  # the verdicts too, so that a resumed study counts what this one counted
            _rewrite(log, foreign, found)
        rounds += 1
    bar.close()
    settings = {**same, "prompts": prompts, "restarts": restarts, "time_limit": time_limit, "patience": patience,
                "seed": seed}
    kept = {t: [r for r in v.values() if r.get("success", True)] for t, v in found.items()}
    return Study(targets, kept, settings, rounds, time.perf_counter() - start)


def _resume(lm: LanguageModel, log: Path, found: dict, same: dict, prompt: Prompt) -> tuple[int, list]:
    """Load an earlier run's ``prompts.jsonl`` into ``found`` (records of this model, method and
    prompt shape only); records without a verdict (the run stopped before judging them) are judged
    now. Unreadable lines (an interrupted write) are skipped with one warning. Returns the next round
    and the lines of other targets and studies (kept in the file when it is rewritten)."""
    from .evaluation import evaluate_prompt
    from .inversion import _context_ids
    rounds, bad, other, foreign = 0, 0, 0, []
    prefix_ids, suffix_ids, _ = _context_ids(lm, prompt)
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            target, text, ids, rnd = rec["target"], rec["text"], list(map(int, rec["ids"])), int(rec["round"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if target not in found or any(rec.get(k, v) != v for k, v in same.items()):
            other += target in found  # (older records lack the fields: taken as agreeing)
            foreign.append(line)
            continue
        if "success" not in rec and "p_target" not in rec:
            ev = evaluate_prompt(lm, ids, lm.encode(target), prefix_ids, suffix_ids)
            rec.update(p_target=ev.p_target, success=bool(ev.success and ev.roundtrip))
        found[target].setdefault(text, rec)
        rounds = max(rounds, rnd + 1)
    if bad or other:
        warnings.warn(f"fvis: {log}: skipped {bad} unreadable line(s) and {other} record(s) of another model, "
                      f"method or prompt shape")
    return rounds, foreign


def _rewrite(log: Path, foreign: list, found: dict) -> None:
    lines = foreign + [json.dumps(r, ensure_ascii=False) for recs in found.values() for r in recs.values()]
    atomic_write(log, lambda f: f.write(("\n".join(lines) + "\n").encode("utf-8")))


def random_counts(lm: LanguageModel, target: str, n: int, length: int, ascii_only: bool = False,
                  seed: int = 0) -> Counter:
    """Token counts of ``n`` random prompts of ``length`` tokens from the vocabulary the target's
    prompts may use (the baseline of a one-target study)."""
    allowed = allowed_tokens(lm, target, ascii_only=ascii_only)
    ids = _init_ids(allowed, n, length, None, torch.Generator().manual_seed(seed))
    return Counter(ids.flatten().tolist())


def token_table(lm: LanguageModel, study: Study, prior: float = 100.0, random_prompts: int = 1000) -> dict:
    """Per target: its prompts' tokens ranked by log-odds z-score against the baseline (the other
    targets' prompts pooled; with one target, ``random_prompts`` random prompts)."""
    table = {}
    for t in study.targets:
        counts = study.counts(t)
        if len(study.targets) > 1:
            base = sum((study.counts(o) for o in study.targets if o != t), Counter())
            kind = "prompts found for " + ", ".join(repr(o) for o in study.targets if o != t)
        else:
            base = random_counts(lm, t, random_prompts, study.settings.get("length", 3), seed=study.settings.get("seed", 0))
            kind = f"{random_prompts} random prompts"
        ranked = log_odds(counts, base, prior=prior) if counts or base else []
        rows = [{"token_id": int(r.token), "token": lm.decode([r.token]),
                 **{k: v for k, v in asdict(r).items() if k != "token"}} for r in ranked]
        table[t] = {"prompts": len(study.prompts[t]), "tokens": sum(counts.values()), "baseline": kind,
                    "baseline_tokens": sum(base.values()), "prior": prior, "ranked": rows}
    return table


def write_study(lm: LanguageModel, study: Study, out: str | Path, prior: float = 100.0, top: int = 20,
                compare: Sequence[str] | None = None) -> list[Path]:
    """``tokens.csv`` and ``tokens.json`` (every target's ranked tokens), ``tokens_<i>.png`` per
    target and ``compare.png``: two targets (``compare``; default: the first two) ranked against
    each other, the tokens that mark each side by side."""
    out = Path(out)
    table = token_table(lm, study, prior)
    data = {"settings": study.settings, "rounds": study.rounds, "seconds": study.seconds, "targets": table,
            "prompts": study.prompts}
    paths = [atomic_write(out / "tokens.json", lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False)
                                                                 .encode("utf-8")))]
    fields = ["target", "rank", "token_id", "token", "count", "baseline_count", "alpha", "delta", "variance", "z"]

    def write_csv(f):
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=fields)
        w.writeheader()
        for t, entry in table.items():
            for rank, row in enumerate(entry["ranked"], 1):
                w.writerow({"target": t, "rank": rank, **row})
        f.write(text.getvalue().encode("utf-8"))

    paths.append(atomic_write(out / "tokens.csv", write_csv))
    for i, t in enumerate(study.targets):
        paths.append(token_chart(t, table[t], out / f"tokens_{i}.png", top))
    pair = list(compare) if compare else study.targets[:2]
    if len(pair) == 2:
        missing = [p for p in pair if p not in table]
        if missing:
            raise FvisError(f"cannot compare {missing[0]!r}: not a target of this study")
        a, b = pair
        if not (study.prompts[a] and study.prompts[b]):
            warnings.warn(f"compare.png not written: no prompts for {a if not study.prompts[a] else b!r}")
            return [p for p in paths if p is not None]
        ranked = [(lm.decode([r.token]), r.z, r.count, r.baseline_count)
                  for r in log_odds(study.counts(a), study.counts(b), prior=prior)]
        paths.append(compare_chart(a, b, ranked, out / "compare.png", top))
    return [p for p in paths if p is not None]
