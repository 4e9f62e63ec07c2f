"""What every attack shares: the result record, 8-bit judging, norms, the restart driver and the
policy that hands each step's per-item objective values to an attack's optimizer.

Every attack has one call shape, ``attack(model, images, *, target=None, labels=None, eps=...,
norm=..., steps=..., seed=..., progress=..., **its own options) -> AttackResult``, and is judged
the same way: on the 8-bit image that will be saved, re-classified.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

import objectives

from ..errors import FvisError
from ..hooks import OUTPUT
from ..inline import Displayable, Panel, fmt
from ..models import ImageModel
from ..policies import Policy, Run, spread


@dataclass
class AttackResult(Displayable):
    """Per-item outcome of an attack (``B`` images). Images are 8-bit-exact floats (k / 255).

    ``success``: judged on ``adversarial`` (the quantized image). ``prob``: p(target) for targeted
    attacks, p(true class) for untargeted ones, on ``adversarial``. ``linf`` / ``l2``: norms of
    ``adversarial - clean`` in pixel-value units ([0, 1] scale). ``steps``: optimizer steps used
    by the kept restart; ``restart``: which restart produced the kept example. ``queries``:
    forward passes per item (all restarts; counted by the attacks that count them, else ``None``).
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    classes: torch.Tensor
    targeted: bool
    success: torch.Tensor
    prob: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    steps: torch.Tensor
    restart: torch.Tensor
    seconds: float
    settings: dict = field(default_factory=dict)
    queries: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())

    def _panel(self) -> Panel:
        """Each clean image, its adversarial image and the perturbation (magnified to fill [0, 1])."""
        images, labels = [], []
        kind = "target" if self.targeted else "class"
        for i in range(len(self.clean)):
            d = self.adversarial[i] - self.clean[i]
            images += [self.clean[i], self.adversarial[i], 0.5 + 0.5 * d / d.abs().max().clamp_min(1e-12)]
            labels += [f"clean, {kind} {int(self.classes[i])}",
                       f"{'fooled' if self.success[i] else 'not fooled'}, p={fmt(float(self.prob[i]))}",
                       f"perturbation\nLinf {float(self.linf[i]) * 255:.1f}/255, L2 {fmt(float(self.l2[i]))}"]
        figures = {"success rate": self.success_rate, "targeted": self.targeted, "seconds": self.seconds}
        if self.queries is not None:
            figures["queries (mean)"] = float(self.queries.float().mean())
        return Panel(f"attack {self.settings.get('method', '')}".strip(), images, labels, figures, columns=3)


def quantize(clean: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The 8-bit image that will be saved, with the norm bound still holding.

    ``clean`` must be 8-bit exact. The perturbation is rounded to the nearest level; for L-inf,
    levels beyond ``floor(255 * eps)`` are clipped; for L2, items whose rounded perturbation
    would exceed ``eps`` are rounded toward zero instead (never increases any coordinate).
    ``eps = inf``: plain rounding (unbounded attacks such as C&W).
    """
    level = (adversarial - clean) * 255
    q = level.round()
    if math.isinf(eps):
        pass
    elif norm == "linf":
        bound = float(math.floor(255 * eps + 1e-6))
        q = q.clamp(-bound, bound)
    else:
        over = q.flatten(1).norm(dim=1) > 255 * eps + 1e-4
        q[over] = level[over].trunc()
    return ((clean * 255).round() + q).clamp(0, 255) / 255


def norms(clean: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item L-inf and L2 of the perturbation, in pixel-value units."""
    d = (adversarial - clean).flatten(1).double()
    return d.abs().amax(1).float(), d.norm(dim=1).float()


@torch.no_grad()
def judge(model, clean_q, adv, eps, norm, classes, targeted):
    """Quantize ``adv`` and re-classify it: ``(adv_q, score, prob)``, ``score > 0`` is success."""
    adv_q = quantize(clean_q, adv, eps, norm)
    logits = model(adv_q)
    m = objectives.adversarial.margin(logits, classes)
    score = m if targeted else -m  # > 0 means success
    prob = logits.softmax(1).gather(1, classes[:, None])[:, 0]
    return adv_q, score, prob


def check_common(eps: float, norm: str, steps: int, restarts: int = 1) -> None:
    if not eps > 0:
        raise FvisError(f"eps must be > 0, got {eps}")
    if norm not in ("linf", "l2"):
        raise FvisError(f"norm must be linf or l2, got {norm!r}")
    if steps < 1 or restarts < 1:
        raise FvisError("steps and restarts must be >= 1")


@dataclass
class Setup:
    """Clean 8-bit images on the model's device and the per-item classes of the goal."""

    clean: torch.Tensor
    classes: torch.Tensor
    targeted: bool
    device: torch.device
    start: float
    labels: torch.Tensor | None = None  # the clean top-1 (set by attacks that need it, e.g. targeted DLR)


def setup(model: ImageModel, images: torch.Tensor, target, labels) -> Setup:
    """8-bit-exact clean images and per-item classes (target, given labels, or clean predictions)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    clean = (images.detach().float().clamp(0, 1).to(device) * 255).round() / 255  # 8-bit exact, as saved
    b = clean.shape[0]
    targeted = target is not None
    given = target if targeted else labels
    if given is not None:  # range-checked by the objective on the engine's first step
        classes = torch.as_tensor(given, dtype=torch.long, device=device).flatten().expand(b).clone()
    else:
        with torch.no_grad():
            classes = model(clean).argmax(1)
    return Setup(clean, classes, targeted, device, start)


# one run on the items ``todo``: (their adversarial inputs, steps used (CPU), queries (CPU) or None)
OneRun = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]


def restarts_loop(model: ImageModel, s: Setup, eps: float, norm: str, restarts: int, one_run: OneRun,
                  settings: dict, judge_eps: float | None = None) -> AttackResult:
    """Run ``one_run`` up to ``restarts`` times on the items not yet successful; keep each item's
    best (by the 8-bit judge's margin) over the restarts. ``judge_eps``: the bound for
    quantization (default ``eps``)."""
    judge_eps = eps if judge_eps is None else judge_eps
    clean, classes, device = s.clean, s.classes, s.device
    b = clean.shape[0]
    best, best_score, best_prob = clean.clone(), torch.full((b,), -torch.inf, device=device), torch.zeros(b, device=device)
    steps_used, restart_of = torch.zeros(b, dtype=torch.long), torch.full((b,), -1, dtype=torch.long)
    queries = None
    for r in range(restarts):
        todo = (best_score <= 0).nonzero().flatten()
        if todo.numel() == 0:
            break
        adv, used, q = one_run(todo, r)
        if q is not None:
            queries = torch.zeros(b, dtype=torch.long) if queries is None else queries
            queries[todo.cpu()] += q
        adv_q, score, prob = judge(model, clean[todo], adv.to(device), judge_eps, norm, classes[todo], s.targeted)
        better = score > best_score[todo]
        keep = todo[better]
        best[keep], best_score[keep], best_prob[keep] = adv_q[better], score[better], prob[better]
        steps_used[keep.cpu()], restart_of[keep.cpu()] = used[better.cpu()], r
    linf, l2 = norms(clean, best)
    return AttackResult(clean=clean.cpu(), adversarial=best.cpu(), classes=classes.cpu(), targeted=s.targeted,
                        success=(best_score > 0).cpu(), prob=best_prob.cpu(), linf=linf.cpu(), l2=l2.cpu(),
                        steps=steps_used, restart=restart_of, seconds=time.perf_counter() - s.start,
                        settings=settings, queries=queries)


def success_stop(classes: torch.Tensor, targeted: bool, kappa: float = 0.0, saved: tuple | None = None):
    """A ``PerItem`` stop rule: the item's (every copy's) top-1 reaches the goal by margin ``kappa``.

    ``saved = (model, param, clean, eps, norm)``: an item stops only when its saved image, the
    8-bit :func:`quantize` of ``param()``, succeeds too (one more forward, of the items whose float
    image just succeeded). Without it a float success that rounding undoes (small L2 balls: most
    of a spread-out perturbation rounds to zero) would end the item's run and fail when judged."""
    def stop(acts, values):
        rows = acts.rows(classes).repeat_interleave(acts.copies)
        ok = objectives.adversarial.succeeded(acts[OUTPUT], rows, targeted, kappa)
        ok = ok.view(acts.batch, acts.copies).all(1)
        if saved is not None and ok.any():
            model, param, clean, eps, norm = saved
            hit = ok.nonzero().flatten()
            where = hit if acts.items is None else acts.items.to(hit.device)[hit]
            with torch.no_grad():
                image = quantize(clean[where], param().detach()[where], eps, norm)
                ok = ok.clone()
                ok[hit] = objectives.adversarial.succeeded(model(image), classes[where], targeted, kappa)
        return ok

    return stop


class Feed(Policy):
    """Hands each step's per-item objective values (full batch, NaN for items not forwarded) to
    ``optimizer.observe(values, todo)`` before the update (APGD's checkpoints, Square's accept)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def observe(self, run: Run, values: torch.Tensor, acts, todo: torch.Tensor | None) -> None:
        self.optimizer.observe(spread(values.detach().float(), todo, run.batch), todo)
        return None
