"""The settings of a prompt inversion, grouped and checked once, here: the prompt's shape
(:class:`Prompt`), the search method with its own settings (:class:`Embed`, :class:`Gcg`) and the
budget (:class:`Budget`). Each checks its values when built, so a command line can build them
before it loads a model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import FvisError, suggest


@dataclass(frozen=True)
class Prompt:
    """``length`` optimized tokens between fixed ``prefix`` and ``suffix`` texts; ``init``: the
    first restart starts from this text (``length`` tokens); ``ascii_only``: printable ASCII
    tokens only."""

    length: int = 3
    prefix: str = ""
    suffix: str = ""
    init: str | None = None
    ascii_only: bool = False

    def __post_init__(self):
        if self.length < 1:
            raise FvisError(f"prompt length must be >= 1, got {self.length}")


@dataclass(frozen=True)
class Embed:
    """``method="embed"``: continuous embeddings moved by ``rule`` (``"normalized"`` gradient steps of
    size ``lr`` per position, or ``"adam"``), forward at the snapped point (``project``, PEZ), a
    scored snap among the ``nearest`` (``snap`` metric: ``"l2"`` or ``"cosine"``) vocabulary
    neighbours (``candidates`` per restart per step; ``greedy``: only when better), an optional
    snapping penalty (``snap_weight``) and hard snaps every ``hard_every`` steps (0: never).
    ``candidates=0, rule="adam"`` is plain PEZ."""

    lr: float = 10.0
    snap: str = "l2"
    snap_weight: float = 0.0
    project: bool = True
    hard_every: int = 0
    candidates: int = 64
    nearest: int = 64
    rule: str = "normalized"
    greedy: bool = False
    name = "embed"

    def __post_init__(self):
        if self.snap not in ("cosine", "l2"):
            raise FvisError(f"snap must be 'cosine' or 'l2', got {self.snap!r}")
        if self.rule not in ("normalized", "adam"):
            raise FvisError(f"rule must be 'normalized' or 'adam', got {self.rule!r}")
        if self.lr <= 0 or self.snap_weight < 0 or self.hard_every < 0 or self.candidates < 0 or self.nearest < 1:
            raise FvisError("embed settings need lr > 0, snap_weight >= 0, hard_every >= 0, candidates >= 0 "
                            f"and nearest >= 1, got {self.settings()}")

    def settings(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Gcg:
    """``method="gcg"``: greedy coordinate gradient, the ``topk`` most promising tokens per
    position and ``candidates`` sampled single-token swaps per restart per step."""

    topk: int = 128
    candidates: int = 64
    name = "gcg"

    def __post_init__(self):
        if self.topk < 1 or self.candidates < 1:
            raise FvisError(f"gcg needs topk >= 1 and candidates >= 1, got {self.topk} and {self.candidates}")

    def settings(self) -> dict:
        return asdict(self)


METHODS = {"embed": Embed, "gcg": Gcg}


@dataclass(frozen=True)
class Budget:
    """``restarts`` prompts optimized as one batch for at most ``steps`` steps and ``time_limit``
    seconds (counted from the call, set-up included; ``None`` or ``inf``: no limit);
    ``stop_on_success``: stop when a restart succeeds on its real tokens (target texts only).
    The defaults are a time budget, not a step count: a search either succeeds within seconds or
    rarely at all, so it runs until success or 60 s (results/invert/ measures this setting)."""

    restarts: int = 1
    steps: int = 1_000_000
    time_limit: float | None = 60.0
    stop_on_success: bool = True

    def __post_init__(self):
        if self.restarts < 1 or self.steps < 1:
            raise FvisError(f"restarts and steps must be >= 1, got {self.restarts} and {self.steps}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise FvisError(f"time limit must be > 0 seconds, got {self.time_limit}")


def search_method(method: str | Embed | Gcg = "embed", **options) -> Embed | Gcg:
    """``method`` by name (``"embed"``, ``"gcg"``) or as settings, with ``options`` (its fields;
    ``None`` keeps the default) applied. An option that the method does not have is an error."""
    if isinstance(method, str):
        if method not in METHODS:
            raise FvisError(f"method must be one of {', '.join(METHODS)}, got {method!r}.{suggest(method, list(METHODS))}")
        method = METHODS[method]()
    given = {k: v for k, v in options.items() if v is not None}
    names = {f.name for f in fields(method)}
    wrong = [k for k in given if k not in names]
    if wrong:
        raise FvisError(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not a setting of the "
                        f"{method.name} method (its settings: {', '.join(sorted(names))})")
    return replace(method, **given)


def check_target(target: str | None) -> None:
    """A target text, when given, must not be empty."""
    if target is not None and (not isinstance(target, str) or not target):
        raise FvisError("the target text is empty")


def check_targets(targets) -> list[str]:
    """A list of target texts: at least one, none empty, none twice."""
    targets = list(targets)
    if not targets:
        raise FvisError("no target given")
    for t in targets:
        check_target(t)
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise FvisError(f"target {twice[0]!r} given twice")
    return targets


def read_targets(path) -> list[str]:
    """Targets from a text file, one per line, kept exactly (a leading space matters: ``" girl"``);
    empty lines are skipped. A missing, unreadable or empty file is an error."""
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise FvisError(f"targets file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FvisError(f"cannot read targets file {str(path)!r}: {e}") from None
    targets = [line for line in text.splitlines() if line.strip()]
    if not targets:
        raise FvisError(f"targets file {str(path)!r} holds no target (one per line)")
    return targets
