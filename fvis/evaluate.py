"""Quality of generated class images, as defined in the fvis guide (§4).

For an image ``x`` made for class ``c`` by model A: ``clean_p`` = p_A(c | x); ``robustness`` =
fraction of held-out random transforms (:func:`fvis.metrics.heldout_transforms`) under which A
still predicts c; ``transfer`` = top-1 accuracy of independent evaluator models on x; ``hfer`` =
share of luminance spectral energy above 0.25 cycles/pixel.
"""
from __future__ import annotations

import csv
import io as _io
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as F

from regularizers import high_frequency_energy

from .errors import FvisError
from .io import _atomic_write, list_images, load_image, write_json
from .metrics import heldout_predictions
from .models import ImageModel

COLUMNS = ("image", "class", "name", "clean_p", "robustness", "transfer", "hfer")
_CLASS_FILE = re.compile(r"^(\d+)_")


def _at_size(model: ImageModel, images: torch.Tensor) -> torch.Tensor:
    size = list(model.input_size)
    return images if list(images.shape[-2:]) == size else F.resize(images, size, antialias=True).clamp(0, 1)


@torch.no_grad()
def evaluate_images(model: ImageModel, images: torch.Tensor, classes: Sequence[int],
                    evaluators: Sequence[ImageModel] = (), transforms: int = 32, seed: int = 0) -> list[dict]:
    """Per image ``(B, C, H, W)`` in [0, 1]: ``clean_p``, ``robustness`` (``None`` if
    ``transforms == 0``), ``transfer`` (``None`` without evaluators), ``hfer``, and each
    evaluator's top-1 hit under ``top1[<name>]``. Images are resized to each model's input size."""
    device = next(model.parameters()).device
    c = torch.as_tensor(list(classes), dtype=torch.long)
    x = _at_size(model, images.to(device))
    clean_p = model(x).softmax(1)[torch.arange(len(c)), c.to(device)].cpu()
    robust = (heldout_predictions(model, x, transforms, seed) == c[:, None]).float().mean(1) if transforms else None
    hits = {}
    for ev in evaluators:
        dev = next(ev.parameters()).device
        hits[ev.name] = (ev(_at_size(ev, images.to(dev))).argmax(1).cpu() == c)
    hfer = high_frequency_energy(images.float().cpu())
    rows = []
    for i in range(len(c)):
        rows.append({
            "clean_p": float(clean_p[i]),
            "robustness": None if robust is None else float(robust[i]),
            "transfer": (sum(float(h[i]) for h in hits.values()) / len(hits)) if hits else None,
            "hfer": float(hfer[i]),
            "top1": {name: bool(h[i]) for name, h in hits.items()},
        })
    return rows


def class_images(folder: str | Path) -> tuple[list[Path], list[int]]:
    """Images named ``<class index>_<anything>.<ext>`` in ``folder``; others are skipped with a warning."""
    files, classes, skipped = [], [], []
    for path in list_images(folder):
        m = _CLASS_FILE.match(path.name)
        if m:
            files.append(path)
            classes.append(int(m.group(1)))
        else:
            skipped.append(path.name)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) not named <class index>_<anything>: "
                      f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    if not files:
        raise FvisError(f"no images named <class index>_<anything> in {folder}")
    return files, classes


def evaluate_folder(folder: str | Path, model: ImageModel, evaluators: Sequence[ImageModel] = (),
                    transforms: int = 32, seed: int = 0, out: str | Path | None = None,
                    batch_size: int = 16) -> dict:
    """Score every ``<class>_*.png`` in ``folder``; write ``evaluation.{csv,json,md}`` to ``out``
    (default: ``folder``). Returns ``{"rows": [...], "mean": {...}}``."""
    files, classes = class_images(folder)
    n_classes = len(model.class_names) if model.class_names else None
    bad = [c for c in classes if n_classes is not None and not 0 <= c < n_classes]
    if bad:
        raise FvisError(f"class index {bad[0]} out of range: {model.name} has {n_classes} classes")
    rows = []
    for i in range(0, len(files), batch_size):
        chunk = files[i:i + batch_size]
        images = [load_image(p, channels=model.channels) for p in chunk]
        sizes = {tuple(im.shape[-2:]) for im in images}
        images = [F.resize(im, list(model.input_size), antialias=True) for im in images] if len(sizes) > 1 else images
        scores = evaluate_images(model, torch.stack(images), classes[i:i + batch_size], evaluators, transforms, seed)
        for path, c, s in zip(chunk, classes[i:i + batch_size], scores):
            name = model.class_names[c] if model.class_names else str(c)
            rows.append({"image": path.name, "class": c, "name": name, **s})
    mean = {k: _mean([r[k] for r in rows]) for k in ("clean_p", "robustness", "transfer", "hfer")}
    report = {"model": model.name, "evaluators": [e.name for e in evaluators], "transforms": transforms,
              "seed": seed, "mean": mean, "rows": rows}
    out = Path(out or folder)
    write_json(report, out / "evaluation.json")
    _atomic_write(out / "evaluation.csv", lambda f: f.write(_csv(rows).encode()))
    _atomic_write(out / "evaluation.md", lambda f: f.write(markdown(report).encode()))
    return report


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _csv(rows: list[dict]) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    names = sorted({k for r in rows for k in r["top1"]})
    writer.writerow(list(COLUMNS) + [f"top1_{n}" for n in names])
    for r in rows:
        writer.writerow([_fmt(r[k]) for k in COLUMNS] + [int(r["top1"][n]) for n in names])
    return buf.getvalue()


def markdown(report: dict) -> str:
    """The evaluation as a Markdown table with a mean row."""
    lines = [f"Model {report['model']}; evaluators {', '.join(report['evaluators']) or 'none'}; "
             f"{report['transforms']} held-out transforms (seed {report['seed']}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(_fmt(r[k]).replace("|", "\\|") for k in COLUMNS) + " |")
    m = report["mean"]
    lines.append("| **mean** | | | " + " | ".join(_fmt(m[k]) for k in ("clean_p", "robustness", "transfer", "hfer")) + " |")
    return "\n".join(lines) + "\n"
