"""Adversarial examples on the fvis engine: eps-ball perturbations, targeted or untargeted.

One :func:`fvis.optimize` run per restart: a :class:`~fvis.param.Perturbation` around the real
images, an adversarial objective (``objectives.targeted`` / ``objectives.untargeted``),
sign-gradient, momentum or Adam steps, optional expectation over transformations, per-item
early stop and best-iterate return. Success is then judged honestly: on the 8-bit image
exactly as it is saved, re-classified.
"""
from __future__ import annotations

import math

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

import objectives
import regularizers as reg

from .engine import optimize
from .errors import FvisError
from .files import contact_sheet, load_image, save_image, versions, write_json
from .hooks import OUTPUT
from .metrics import heldout_predictions
from .models import ImageModel, top_classes
from .naming import unique
from .optim import SteepestDescent
from .param import Perturbation
from .policies import PerItem, SkipFinalValues
from .progress import progress_bar

METHODS = ("pgd", "mifgsm", "adam")


@dataclass
class AttackResult:
    """Per-item outcome of :func:`attack` (``B`` images). Images are 8-bit-exact floats (k / 255).

    ``success``: judged on ``adversarial`` (the quantized image). ``prob``: p(target) for targeted
    attacks, p(true class) for untargeted ones, on ``adversarial``. ``linf`` / ``l2``: norms of
    ``adversarial - clean`` in pixel-value units ([0, 1] scale). ``steps``: optimizer steps used
    by the kept restart; ``restart``: which restart produced the kept example.
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

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


def quantize(clean: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The 8-bit image that will be saved, with the norm bound still holding.

    ``clean`` must be 8-bit exact. The perturbation is rounded to the nearest level; for L-inf,
    levels beyond ``floor(255 * eps)`` are clipped; for L2, items whose rounded perturbation
    would exceed ``eps`` are rounded toward zero instead (never increases any coordinate).
    """
    level = (adversarial - clean) * 255
    q = level.round()
    if norm == "linf":
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


def _optimizer(method: str, step_size: float, norm: str):
    if method == "pgd":
        return lambda params: SteepestDescent(params, lr=step_size, norm=norm)
    if method == "mifgsm":
        return lambda params: SteepestDescent(params, lr=step_size, norm=norm, momentum=1.0)
    if method == "adam":
        return lambda params: torch.optim.Adam(params, lr=step_size)
    raise FvisError(f"unknown attack method {method!r}: choose from {', '.join(METHODS)}")


@torch.no_grad()
def _judge(model, clean_q, adv, eps, norm, classes, targeted):
    adv_q = quantize(clean_q, adv, eps, norm)
    logits = model(adv_q)
    m = objectives.adversarial.margin(logits, classes)
    score = m if targeted else -m  # > 0 means success
    prob = logits.softmax(1).gather(1, classes[:, None])[:, 0]
    return adv_q, score, prob


def attack(model: ImageModel, images: torch.Tensor, *, target: int | Sequence[int] | None = None,
           labels: Sequence[int] | torch.Tensor | None = None, eps: float = 8 / 255, norm: str = "linf",
           steps: int = 10, step_size: float | None = None, method: str = "pgd", loss: str = "ce",
           restarts: int = 1, random_start: bool = True, eot: int = 0, early_stop: bool = True,
           best_iterate: bool = True, kappa: float = 0.0, seed: int = 0, progress: bool = True) -> AttackResult:
    """Find adversarial examples for ``images`` ``(B, C, H, W)`` in [0, 1] within an ``eps``-ball.

    Args:
        target: class(es) to reach (targeted), or ``None`` for untargeted.
        labels: true classes for untargeted attacks (default: the model's clean predictions).
        eps: radius in pixel-value units (``8/255``); norm: ``"linf"`` or ``"l2"``.
        steps, step_size: per restart (step size default ``eps / 4``); method: ``pgd`` (sign
            steps; unit-L2 steps for ``l2``), ``mifgsm`` (momentum 1.0), ``adam``.
        loss: ``"ce"`` or ``"margin"``. restarts: further runs (random start) for items not yet
            successful. random_start: first run starts inside the ball at random.
        eot: > 0: each step averages the loss over ``eot`` random transformations (pad, jitter,
            scale, rotate) so the example survives them.
        early_stop: freeze each item once it succeeds by a logit margin above ``kappa``.
        best_iterate: return each item's best iterate by the objective (default), not the last.
    """
    if not eps > 0:
        raise FvisError(f"eps must be > 0, got {eps}")
    if norm not in ("linf", "l2"):
        raise FvisError(f"norm must be linf or l2, got {norm!r}")
    if steps < 1 or restarts < 1 or eot < 0:
        raise FvisError("steps and restarts must be >= 1 and eot >= 0")
    step_size = eps / 4 if step_size is None else step_size
    if not step_size > 0:
        raise FvisError(f"step size must be > 0, got {step_size}")
    make_optimizer = _optimizer(method, step_size, norm)
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

    best, best_score, best_prob = clean.clone(), torch.full((b,), -torch.inf, device=device), torch.zeros(b, device=device)
    steps_used, restart_of = torch.zeros(b, dtype=torch.long), torch.full((b,), -1, dtype=torch.long)
    for r in range(restarts):
        todo = (best_score <= 0).nonzero().flatten()
        if todo.numel() == 0:
            break
        cls = classes[todo]
        param = Perturbation(clean[todo], eps, norm, random_start=random_start or r > 0, seed=seed + r).to(device)
        objective = (objectives.targeted if targeted else objectives.untargeted)(cls, loss)
        regs = [reg.TransformRobustness(copies=eot)] if eot else []

        def stop(acts, values, cls=cls):
            rows = acts.rows(cls).repeat_interleave(acts.copies)
            ok = objectives.adversarial.succeeded(acts[OUTPUT], rows, targeted, kappa)
            return ok.view(acts.batch, acts.copies).all(1)

        per_item = PerItem(stop=stop if early_stop else None, keep_best=best_iterate, skip_done=True)
        result = optimize(model, objective, param, regs, steps=steps, lr=step_size, optimizer=make_optimizer,
                          seed=seed + r, progress=progress,
                          policies=[per_item, SkipFinalValues()])  # judged below, on 8-bit images
        adv_q, score, prob = _judge(model, clean[todo], result.input.to(device), eps, norm, cls, targeted)
        better = score > best_score[todo]
        keep = todo[better]
        best[keep], best_score[keep], best_prob[keep] = adv_q[better], score[better], prob[better]
        used = result.done_step if result.done_step is not None else torch.full((todo.numel(),), result.steps)
        steps_used[keep.cpu()], restart_of[keep.cpu()] = used[better.cpu()], r
    linf, l2 = norms(clean, best)
    settings = {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size, "method": method, "loss": loss,
                "restarts": restarts, "random_start": random_start, "eot": eot, "early_stop": early_stop,
                "best_iterate": best_iterate,
                "kappa": kappa, "seed": seed, "targeted": targeted}
    return AttackResult(clean=clean.cpu(), adversarial=best.cpu(), classes=classes.cpu(), targeted=targeted,
                        success=(best_score > 0).cpu(), prob=best_prob.cpu(), linf=linf.cpu(), l2=l2.cpu(),
                        steps=steps_used, restart=restart_of, seconds=time.perf_counter() - start,
                        settings=settings)


def heldout_success(model: ImageModel, result: AttackResult, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Per item: the fraction of ``n`` held-out random transforms (:mod:`fvis.metrics`) under which
    the saved adversarial image still succeeds. ``(B,)``."""
    device = next(model.parameters()).device
    preds = heldout_predictions(model, result.adversarial.to(device), n, seed)
    hit = preds == result.classes[:, None]
    return (hit if result.targeted else ~hit).float().mean(1)


def _amplified(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    scale = float(delta.abs().max())
    return (0.5 + delta / (2 * scale) if scale > 0 else torch.full_like(delta, 0.5)), (0.5 / scale if scale else 0.0)


def _top5_lines(title: str, top: list[dict]) -> str:
    return "\n".join([title] + [f"{t['p']:.3f} {t['name']}" for t in top])


def save_attack(model: ImageModel, result: AttackResult, stems: Sequence[str], out: Path,
                extra: dict | None = None) -> list[dict]:
    """Per image: ``<stem>_adv.png`` (lossless, exactly what was judged), ``<stem>_delta.png``
    (perturbation amplified to the full range), ``<stem>_compare.png`` (clean | adversarial | delta
    with top-5 before and after) and ``<stem>.json``. Returns the JSON records."""
    out = Path(out)
    names = model.class_names
    before, after = top_classes(model, result.clean), top_classes(model, result.adversarial)
    records = []
    for i, stem in enumerate(stems):
        c = int(result.classes[i])
        save_image(result.adversarial[i], out / f"{stem}_adv.png")
        delta, gain = _amplified(result.adversarial[i] - result.clean[i])
        save_image(delta, out / f"{stem}_delta.png")
        kind = "target" if result.targeted else "true class"
        contact_sheet([result.clean[i], result.adversarial[i], delta],
                      [_top5_lines("clean, top-5:", before[i]),
                       _top5_lines(f"adversarial ({'ok' if result.success[i] else 'failed'}), top-5:", after[i]),
                       f"perturbation x{gain:.0f}\nLinf {float(result.linf[i]) * 255:.2f}/255\n"
                       f"L2 {float(result.l2[i]):.3f}\n{kind}: {names[c] if names else c}"],
                      out / f"{stem}_compare.png", columns=3, lines=6)
        record = {
            "image": stem, "model": model.name, "targeted": result.targeted,
            ("target" if result.targeted else "true_class"): {"class": c, "name": names[c] if names else str(c)},
            "success": bool(result.success[i]),
            "success_judged_on": "the saved 8-bit PNG, re-classified",
            "prob": float(result.prob[i]), "linf": float(result.linf[i]), "linf_255": float(result.linf[i]) * 255,
            "l2": float(result.l2[i]), "steps_used": int(result.steps[i]), "restart": int(result.restart[i]),
            "clean_top5": before[i], "adversarial_top5": after[i], "delta_png_gain": gain,
            "settings": result.settings, "seconds_batch": round(result.seconds, 3), "versions": versions(),
            **(extra or {}),
        }
        write_json(record, out / f"{stem}.json")
        records.append(record)
    return records


MIN_SIDE = 32  # smaller images are refused rather than blown up to the model's input size


def attack_files(model: ImageModel, paths: Sequence[Path], out: Path, *, target: int | None = None,
                 label: int | None = None, batch_size: int = 16, heldout: int = 32, progress: bool = True,
                 **kwargs) -> dict:
    """Attack image files (resized to the model's input size, centre crop) in batches and write
    the per-image outputs of :func:`save_attack` plus ``out/summary.json``. ``kwargs`` go to
    :func:`attack`. Every file is read before any optimization starts (bad files fail fast)."""
    images = [load_image(p, model.input_size, model.channels, min_side=MIN_SIDE) for p in paths]
    stems = unique(Path(p).stem for p in paths)
    records, seconds = [], 0.0
    chunks = range(0, len(images), batch_size)
    for i in progress_bar(chunks, show=progress and len(chunks) > 1, desc="batches", unit="batch"):
        batch = torch.stack(images[i:i + batch_size])
        result = attack(model, batch, target=target, labels=None if label is None else [label] * len(batch),
                        progress=progress, **kwargs)
        seconds += result.seconds
        extra = {}
        if heldout:
            rates = heldout_success(model, result, n=heldout, seed=kwargs.get("seed", 0))
            extra = [{"heldout_success": float(r), "heldout_transforms": heldout} for r in rates]
        for j, rec in enumerate(save_attack(model, result, stems[i:i + batch_size], out)):
            if extra:
                rec.update(extra[j])
                write_json(rec, out / f"{rec['image']}.json")
            records.append(rec)
    ok = [r["success"] for r in records]
    summary = {
        "model": model.name, "images": len(records), "success_rate": sum(ok) / len(ok),
        "success_judged_on": "the saved 8-bit PNGs, re-classified",
        "median_linf_255": _median([r["linf_255"] for r in records]),
        "median_l2": _median([r["l2"] for r in records]),
        "median_steps": _median([r["steps_used"] for r in records]),
        "seconds": round(seconds, 3), "settings": records[0]["settings"] if records else {},
        "heldout_success_mean": (sum(r["heldout_success"] for r in records) / len(records)) if heldout else None,
        "items": [{k: r[k] for k in ("image", "success", "prob", "linf_255", "l2", "steps_used")} for r in records],
    }
    write_json(summary, Path(out) / "summary.json")
    return {"summary": summary, "records": records}


def _median(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median()) if values else float("nan")
