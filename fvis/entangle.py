"""Entanglement between classes, measured on their prototype images.

For S classes with prototype images ``<class index>_*.png``: ``P[i, j]`` = p(class j | prototype of
class i), the softmax of the model's logits restricted to the S classes (each row sums to 1; several
prototypes of one class: their rows are averaged), and ``cosine[i, j]`` = cosine similarity of the
classes' mean pooled penultimate features. Pairs rank by the symmetric score (P[i, j] + P[j, i]) / 2.
"""
from __future__ import annotations

import csv
import io as _io
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .errors import FvisError
from .evaluate import check_classes, class_images, pooled_folder
from .hooks import named_layers
from .files import atomic_write, write_json
from .models import ImageModel


def default_layer(model: ImageModel) -> str:
    """The pooled penultimate layer: the last module whose name ends in ``pool``/``pooling``
    (``_avg_pooling`` for EfficientNet, ``avgpool`` for ResNets)."""
    pools = [n for n in named_layers(model) if n.rsplit(".", 1)[-1].lower().endswith(("pool", "pooling"))]
    if not pools:
        raise FvisError(f"{model.name} has no module named *pool*: name the feature layer with --layer "
                        f"(`fvis layers {model.name}` lists them)")
    return pools[-1]


def entanglement(logits: torch.Tensor, features: torch.Tensor, classes: Sequence[int]):
    """``logits (N, K)`` and pooled ``features (N, D)`` of N prototypes of ``classes`` ->
    ``(P (S, S), cosine (S, S), the S distinct classes sorted)``."""
    labels = torch.as_tensor(list(classes))
    kept = sorted(set(labels.tolist()))
    probs = logits[:, kept].double().softmax(1)  # (N, S): p renormalized over the chosen classes
    P = torch.stack([probs[labels == c].mean(0) for c in kept])
    means = torch.nn.functional.normalize(torch.stack([features[labels == c].double().mean(0) for c in kept]), dim=1)
    return P, means @ means.T, kept


def ranked_pairs(P: torch.Tensor, cosine: torch.Tensor, classes: Sequence[int], names: Sequence[str],
                 top: int | None = None) -> list[dict]:
    """Pairs ``i < j`` by ``(P[i, j] + P[j, i]) / 2``, most entangled first."""
    S = len(classes)
    pairs = [{"a": classes[i], "b": classes[j], "name_a": names[i], "name_b": names[j],
              "score": float(P[i, j] + P[j, i]) / 2, "p_b_given_a": float(P[i, j]),
              "p_a_given_b": float(P[j, i]), "feature_cosine": float(cosine[i, j])}
             for i in range(S) for j in range(i + 1, S)]
    return sorted(pairs, key=lambda p: -p["score"])[:top]


def entangle_folder(folder: str | Path, model: ImageModel, layer: str | None = None, top: int = 10,
                    out: str | Path | None = None, batch_size: int = 16) -> dict:
    """Entanglement of the prototypes in ``folder``; writes ``entanglement.{csv,json,png}`` and
    ``entanglement_features.csv`` to ``out`` (default: ``folder``). Returns the JSON report."""
    files, classes = class_images(folder)
    check_classes(model, classes)
    if len(set(classes)) < 2:
        raise FvisError(f"entanglement needs prototypes of at least two classes; {folder} has only class {classes[0]}")
    layer = layer or default_layer(model)
    (features, logits), files, classes = pooled_folder(model, files, classes, [layer, "output"], batch_size)
    if max(classes) >= logits.shape[1]:
        raise FvisError(f"class index {max(classes)} out of range: {model.name} has {logits.shape[1]} outputs")
    P, cosine, kept = entanglement(logits, features, classes)
    names = [model.class_names[c] if model.class_names else str(c) for c in kept]
    report = {"model": model.name, "layer": layer, "classes": kept, "names": names,
              "images": [p.name for p in files], "probability": P, "feature_cosine": cosine,
              "pairs": ranked_pairs(P, cosine, kept, names, top)}
    out = Path(out or folder)
    write_json(report, out / "entanglement.json")
    atomic_write(out / "entanglement.csv", lambda f: f.write(_csv(P, names).encode()))
    atomic_write(out / "entanglement_features.csv", lambda f: f.write(_csv(cosine, names).encode()))
    heatmap([(P, f"{model.name}: p(j | prototype of i), renormalized over {len(kept)} classes"),
             (cosine, f"cosine of {layer} features")], names, out / "entanglement.png")
    return report


def _csv(matrix: torch.Tensor, names: Sequence[str]) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["prototype", *names])
    for name, row in zip(names, matrix.tolist()):
        writer.writerow([name, *(f"{v:.6f}" for v in row)])
    return buf.getvalue()


def heatmap(panels: Sequence[tuple[torch.Tensor, str]], names: Sequence[str], path: str | Path) -> Path | None:
    """``(S, S)`` matrices side by side as PNG heatmaps (``(matrix, title)`` each; colour scale
    [0, 1], or [-1, 1] when a matrix has negative values) with class names as tick labels and the
    values written in the cells when S <= 20. Needs matplotlib; without it, warns and writes nothing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(f"{Path(path).name} not written: matplotlib is not installed (pip install matplotlib)")
        return None
    S = len(names)
    side = min(4 + 0.45 * S, 30)
    fig = Figure(figsize=((side + 1.5) * len(panels), side), layout="constrained")
    for k, (matrix, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        lo = -1.0 if float(matrix.min()) < 0 else 0.0
        image = ax.imshow(matrix.float().numpy(), vmin=lo, vmax=1, cmap="viridis")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(S), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(S), names if k == 0 else [], fontsize=8)
        ax.set_xlabel("class j")
        ax.set_ylabel("prototype of class i" if k == 0 else "")
        ax.set_title(title, fontsize=9)
        if S <= 20:
            for i in range(S):
                for j in range(S):
                    v = float(matrix[i, j])
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if (v - lo) / (1 - lo) > 0.6 else "white")
    return atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
