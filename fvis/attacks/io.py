"""Writing attacks out: per-image PNGs and JSON (``fvis attack``), held-out transform success."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..files import contact_sheet, load_image, save_image, versions, write_json
from ..metrics import heldout_predictions
from ..models import ImageModel, top_classes
from ..naming import unique
from ..progress import progress_bar
from .base import AttackResult
from .methods import attack


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
            **({"queries": int(result.queries[i])} if result.queries is not None else {}),
            "settings": result.settings, "seconds_batch": round(result.seconds, 3), "versions": versions(),
            **(extra or {}),
        }
        write_json(record, out / f"{stem}.json")
        records.append(record)
    return records


MIN_SIDE = 32  # smaller images are refused rather than blown up to the model's input size


def attack_files(model: ImageModel, paths: Sequence[Path], out: Path, *, target: int | None = None, label: int | None = None, batch_size: int = 16, heldout: int = 32,
                 progress: bool = True, **kwargs) -> dict:
    """Attack image files (resized to the model's input size, centre crop) in batches and write
    the per-image outputs of :func:`save_attack` plus ``out/summary.json``. ``kwargs`` go to
    :func:`fvis.attacks.attack` (``method=...`` picks the attack). Every file is read before any optimization starts
    (bad files fail fast)."""
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
