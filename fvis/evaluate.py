"""Quality of generated class images, as defined in the fvis guide (§4).

For an image ``x`` made for class ``c`` by model A: ``clean_p`` = p_A(c | x); ``robustness`` =
fraction of held-out random transforms (:func:`fvis.metrics.heldout_transforms`) under which A
still predicts c; ``transfer`` = top-1 accuracy of independent evaluator models on x
(``transfer_heldout``: under the held-out transforms; ``transfer_unseen``: under a family of colour,
resolution, JPEG and noise transforms apart from the recipes' training transforms (the ``colour-shift`` recipe
trains on colour shifts), :func:`fvis.metrics.unseen_transforms`); ``hfer`` =
share of luminance spectral energy above 0.25 cycles/pixel; ``path_similarity`` (with a folder of
natural reference images; Geirhos et al. 2023) = Spearman correlation of x's per-layer pooled
activations with the class mean of natural images of c, averaged over layers and normalized so that
natural images of other classes score 0 and (held-out) natural images of c score 1.
"""
from __future__ import annotations

import csv
import io as _io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms.v2 import functional as F

from regularizers import high_frequency_energy

from .datasets import read_images, warn_skipped
from .errors import FvisError
from .files import atomic_write as _atomic_write, list_images, write_json
from .hooks import Capture, frozen, named_layers, output_shapes
from .metrics import heldout_predictions
from .models import ImageModel
from .naturalness import naturalness, photo_ranges

COLUMNS = ("image", "class", "name", "clean_p", "robustness", "transfer", "transfer_heldout", "transfer_unseen",
           "hfer")
PATH_COLUMNS = ("path_similarity", "path_similarity_raw")
_CLASS_FILE = re.compile(r"^(\d+)_")
_OWN_SUMMARIES = {"contact_sheet.png", "entanglement.png"}  # fvis writes these next to prototypes


def _at_size(model: ImageModel, images: torch.Tensor) -> torch.Tensor:
    size = list(model.input_size)
    return images if list(images.shape[-2:]) == size else F.resize(images, size, antialias=True).clamp(0, 1)


@torch.no_grad()
def evaluate_images(model: ImageModel, images: torch.Tensor, classes: Sequence[int],
                    evaluators: Sequence[ImageModel] = (), transforms: int = 32, seed: int = 0) -> list[dict]:
    """Per image ``(B, C, H, W)`` in [0, 1]: ``clean_p``, ``robustness`` (``None`` if
    ``transforms == 0``), ``transfer`` (``None`` without evaluators), ``transfer_heldout`` (the
    evaluators' top-1 accuracy under the same held-out transforms; ``None`` without evaluators or
    transforms), ``transfer_unseen`` (the same under as many :func:`fvis.metrics.unseen_transforms`),
    ``hfer``, and each evaluator's top-1 hit under ``top1[<name>]``. Images are
    resized to each model's input size."""
    device = next(model.parameters()).device
    c = torch.as_tensor(list(classes), dtype=torch.long)
    x = _at_size(model, images.to(device))
    clean_p = model(x).softmax(1)[torch.arange(len(c)), c.to(device)].cpu()
    robust = (heldout_predictions(model, x, transforms, seed) == c[:, None]).float().mean(1) if transforms else None
    hits, held, unseen = {}, [], []
    for ev in evaluators:
        dev = next(ev.parameters()).device
        x_ev = _at_size(ev, images.to(dev))
        hits[ev.name] = (ev(x_ev).argmax(1).cpu() == c)
        if transforms:
            held.append((heldout_predictions(ev, x_ev, transforms, seed) == c[:, None]).float().mean(1))
            unseen.append((heldout_predictions(ev, x_ev, transforms, seed, family="unseen") == c[:, None])
                          .float().mean(1))
    hfer = high_frequency_energy(images.float().cpu())
    rows = []
    for i in range(len(c)):
        rows.append({
            "clean_p": float(clean_p[i]),
            "robustness": None if robust is None else float(robust[i]),
            "transfer": (sum(float(h[i]) for h in hits.values()) / len(hits)) if hits else None,
            "transfer_heldout": (sum(float(h[i]) for h in held) / len(held)) if held else None,
            "transfer_unseen": (sum(float(h[i]) for h in unseen) / len(unseen)) if unseen else None,
            "hfer": float(hfer[i]),
            "top1": {name: bool(h[i]) for name, h in hits.items()},
        })
    return rows


def class_images(folder: str | Path) -> tuple[list[Path], list[int]]:
    """Images named ``<class index>_<anything>.<ext>`` in ``folder``; others are skipped with a
    warning (fvis's own contact sheet and entanglement plot silently)."""
    files, classes, skipped = [], [], []
    for path in list_images(folder):
        m = _CLASS_FILE.match(path.name)
        if m:
            files.append(path)
            classes.append(int(m.group(1)))
        elif path.name not in _OWN_SUMMARIES:
            skipped.append(path.name)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) not named <class index>_<anything>: "
                      f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    if not files:
        raise FvisError(f"no images named <class index>_<anything> in {folder}")
    return files, classes


def check_classes(model: ImageModel, classes: Sequence[int]) -> None:
    """Every class index must exist in ``model``'s output (when it has class names)."""
    n = len(model.class_names) if model.class_names else None
    bad = [c for c in classes if n is not None and not 0 <= c < n]
    if bad:
        raise FvisError(f"class index {bad[0]} out of range: {model.name} has {n} classes")


def load_batch(paths: Sequence[Path], model: ImageModel) -> tuple[list[int], torch.Tensor | None, list]:
    """Image files as one ``(B, C, H, W)`` batch in [0, 1], resized to the model's input size when
    their sizes differ, by the folder rule (:func:`fvis.datasets.read_images`): ``(indices read,
    batch or None, skipped (path, reason))``."""
    kept, images, skipped = read_images(paths, channels=model.channels)
    if len({tuple(im.shape[-2:]) for im in images}) > 1:
        images = [F.resize(im, list(model.input_size), antialias=True).clamp(0, 1) for im in images]
    return kept, (torch.stack(images) if images else None), skipped


def pooled_folder(model: ImageModel, files: Sequence[Path], classes: Sequence[int], layers: Sequence[str],
                  batch_size: int = 16, crop: bool = False) -> tuple[list[torch.Tensor], list[Path], list[int]]:
    """:func:`pooled_activations` of every readable file, batched: ``(activations per layer, files
    read, their classes)``; unreadable files are skipped with one warning. ``crop``: every image
    resized (short side) and centre-cropped to the model's input size; otherwise as
    :func:`load_batch`."""
    parts, read, read_classes, skipped = [], [], [], []
    for i in range(0, len(files), batch_size):
        if crop:
            kept, images, bad = read_images(files[i:i + batch_size], model.input_size, model.channels)
            images = torch.stack(images) if images else None
        else:
            kept, images, bad = load_batch(files[i:i + batch_size], model)
        skipped += bad
        if images is not None:
            parts.append(pooled_activations(model, images, layers))
            read += [files[i + j] for j in kept]
            read_classes += [classes[i + j] for j in kept]
    warn_skipped(skipped)
    if not parts:
        raise FvisError(f"no readable images among {len(files)} file(s) in {Path(files[0]).parent}")
    return [torch.cat(per_layer) for per_layer in zip(*parts)], read, read_classes


def evaluate_folder(folder: str | Path, model: ImageModel, evaluators: Sequence[ImageModel] = (),
                    transforms: int = 32, seed: int = 0, out: str | Path | None = None,
                    batch_size: int = 16, reference: str | Path | None = None) -> dict:
    """Score every ``<class>_*.png`` in ``folder``; write ``evaluation.{csv,json,md}`` to ``out``
    (default: ``folder``). With a ``reference`` folder of natural ``<class>_*`` images, rows also get
    ``path_similarity`` and ``path_similarity_raw``. Returns ``{"rows": [...], "mean": {...}}``."""
    files, classes = class_images(folder)
    check_classes(model, classes)
    ref = path_reference(model, reference, batch_size=batch_size) if reference is not None else None
    rows, skipped = [], []
    for i in range(0, len(files), batch_size):
        kept, images, bad = load_batch(files[i:i + batch_size], model)
        skipped += bad
        if images is None:
            continue
        chunk, chunk_classes = [files[i + j] for j in kept], [classes[i + j] for j in kept]
        scores = evaluate_images(model, images, chunk_classes, evaluators, transforms, seed)
        for score, nat in zip(scores, naturalness(images)):
            score.update(nat)
        if ref is not None:
            for s, path in zip(scores, ref.score(pooled_activations(model, images, ref.layers), chunk_classes)):
                s.update(path)
        for path, c, s in zip(chunk, chunk_classes, scores):
            name = model.class_names[c] if model.class_names else str(c)
            rows.append({"image": path.name, "class": c, "name": name, **s})
    warn_skipped(skipped)
    if not rows:
        raise FvisError(f"no readable images among {len(files)} file(s) in {folder}")
    metrics = COLUMNS[3:] + natural_columns() + (PATH_COLUMNS if ref else ())
    mean = {k: _mean([r[k] for r in rows]) for k in metrics}
    report = {"model": model.name, "evaluators": [e.name for e in evaluators], "transforms": transforms,
              "seed": seed, "mean": mean, "rows": rows,
              "skipped": [{"image": p.name, "reason": r} for p, r in skipped]}
    if ref is not None:
        missing = sorted({c for c in classes if c not in ref.means})
        if missing:
            warnings.warn(f"no reference images of class(es) {', '.join(map(str, missing))} in {reference}: "
                          f"their path similarity is empty")
        report["reference"] = {"folder": str(reference), "images": ref.images, "layers": ref.layers,
                               "same": ref.same, "other": ref.other}
    out = Path(out or folder)
    write_json(report, out / "evaluation.json")
    _atomic_write(out / "evaluation.csv", lambda f: f.write(_csv(rows, _columns(report)).encode()))
    _atomic_write(out / "evaluation.md", lambda f: f.write(markdown(report).encode()))
    return report


def pooled(t: torch.Tensor) -> torch.Tensor:
    """Mean per channel over positions: ``(B, C, H, W) -> (B, C)``; ``(B, T, D) -> (B, D)``
    (mean over tokens); ``(B, D)`` unchanged."""
    return t.mean((2, 3)) if t.dim() == 4 else t.mean(1) if t.dim() == 3 else t.flatten(1)


@torch.no_grad()
def pooled_activations(model: ImageModel, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """One forward of ``(B, C, H, W)`` images (resized to the model's input size): the
    :func:`pooled` output of each layer (``"output"``: the logits), one ``(B, C_l)`` per layer."""
    device = next(model.parameters()).device
    with frozen(model), Capture(model, layers) as cap:
        acts = cap.forward(_at_size(model, images.to(device)))
    return [pooled(acts[name]).float().cpu() for name in layers]


def path_layers(model: ImageModel, max_layers: int = 8) -> list[str]:
    """Default layers for path similarity: every ``_blocks.N`` output (EfficientNet); otherwise
    ``max_layers`` modules evenly spaced (in ``named_modules`` order) among those whose output is
    4-D in one dry forward."""
    blocks = [n for n in named_layers(model) if re.fullmatch(r"_blocks\.\d+", n)]
    if blocks:
        return blocks
    x = torch.full((1, model.channels, *model.input_size), 0.5, device=next(model.parameters()).device)
    conv = [n for n, _, shape, calls in output_shapes(model, x)[:-1]
            if calls and isinstance(shape, tuple) and len(shape) == 4]
    if not conv:
        raise FvisError(f"{model.name} has no layer with a 4-D (B, C, H, W) output for path similarity")
    picks = sorted({round(i * (len(conv) - 1) / max(max_layers - 1, 1)) for i in range(max_layers)})
    return [conv[i] for i in picks]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dim: ``a (N, D)``, ``b (N, D)`` or ``(D,)`` -> ``(N,)``.
    Ranks by a stable double argsort: tied values get distinct ranks (no tie averaging)."""
    ra, rb = (t.argsort(dim=-1, stable=True).argsort(-1).double() for t in (a, b.expand_as(a)))
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def path_profile(acts: Sequence[torch.Tensor], means: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-layer Spearman correlations of pooled activations ``acts[l] (N, C_l)`` with ``means[l]``
    (``(C_l,)`` or ``(N, C_l)``): ``(N, L)``; its mean over layers is the raw path similarity."""
    return torch.stack([spearman(a, m) for a, m in zip(acts, means)], 1)


@dataclass
class PathReference:
    """Class means of natural images' pooled activations and the two normalization baselines:
    ``same[c]`` = mean raw similarity of each natural image of c to the mean of the *other* images
    of c (``None`` with a single image); ``other[c]`` = mean raw similarity of natural images of the
    other classes to c's mean (``None`` without other classes)."""
    layers: list[str]
    means: dict[int, list[torch.Tensor]]
    same: dict[int, float | None]
    other: dict[int, float | None]
    images: int

    def score(self, acts: Sequence[torch.Tensor], classes: Sequence[int]) -> list[dict]:
        """``path_similarity`` (normalized, or ``None``) and ``path_similarity_raw`` per image,
        from :func:`pooled_activations` over ``self.layers``."""
        rows = []
        for i, c in enumerate(classes):
            if c not in self.means:
                rows.append(dict.fromkeys(PATH_COLUMNS))
                continue
            raw = float(path_profile([a[i:i + 1] for a in acts], self.means[c]).mean())
            same, other = self.same[c], self.other[c]
            norm = (raw - other) / (same - other) if same is not None and other is not None and same != other else None
            rows.append({"path_similarity": norm, "path_similarity_raw": raw})
        return rows


def path_reference(model: ImageModel, folder: str | Path, layers: Sequence[str] | None = None,
                   batch_size: int = 16) -> PathReference:
    """Pooled activations of the natural images ``<class>_*`` in ``folder`` (resized on the short
    side and centre-cropped to the model's input size) and the baselines of :class:`PathReference`."""
    files, classes = class_images(folder)
    check_classes(model, classes)
    layers = list(layers or path_layers(model))
    acts, files, classes = pooled_folder(model, files, classes, layers, batch_size, crop=True)
    labels = torch.tensor(classes)
    means, same, other = {}, {}, {}
    for c in sorted(set(classes)):
        mine = labels == c
        n = int(mine.sum())
        means[c] = [a[mine].mean(0) for a in acts]
        loo = [(a[mine].sum(0) - a[mine]) / max(n - 1, 1) for a in acts]  # leave-one-out class means
        same[c] = float(path_profile([a[mine] for a in acts], loo).mean()) if n > 1 else None
        other[c] = float(path_profile([a[~mine] for a in acts], means[c]).mean()) if n < len(classes) else None
    return PathReference(layers, means, same, other, len(files))


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def natural_columns() -> tuple[str, ...]:
    """The naturalness statistics with shipped photo ranges (HFER is a column already)."""
    return (*(k for k in photo_ranges() if k not in COLUMNS), "natural_in_range")


def _columns(report: dict) -> tuple[str, ...]:
    return COLUMNS + natural_columns() + (PATH_COLUMNS if "reference" in report else ())


def _csv(rows: list[dict], columns: Sequence[str] = COLUMNS) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    names = sorted({k for r in rows for k in r["top1"]})
    writer.writerow(list(columns) + [f"top1_{n}" for n in names])
    for r in rows:
        writer.writerow([_fmt(r[k]) for k in columns] + [int(r["top1"][n]) for n in names])
    return buf.getvalue()


def markdown(report: dict) -> str:
    """The evaluation as a Markdown table with a mean row."""
    columns = _columns(report)
    ref = report.get("reference")
    path = (f" Path similarity against {ref['images']} natural images in {ref['folder']} "
            f"({len(ref['layers'])} layers).") if ref else ""
    ranges = "; ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in photo_ranges().items())
    lines = [f"Model {report['model']}; evaluators {', '.join(report['evaluators']) or 'none'}; "
             f"{report['transforms']} held-out and as many unseen transforms (seed {report['seed']}).{path} Naturalness: "
             f"natural_in_range counts the statistics inside the offline photos' ranges ({ranges}).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(_fmt(r[k]).replace("|", "\\|") for k in columns) + " |")
    m = report["mean"]
    lines.append("| **mean** | | | " + " | ".join(_fmt(m[k]) for k in columns[3:]) + " |")
    if report.get("skipped"):
        lines += ["", f"Skipped {len(report['skipped'])} unreadable file(s): "
                      + ", ".join(s["image"] for s in report["skipped"]) + "."]
    return "\n".join(lines) + "\n"
