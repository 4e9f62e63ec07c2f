"""Maps of a feature space: a 2-D embedding of a layer's pooled activations over a folder of
images, written as ``map.csv``, ``map.json`` and ``map.png`` (thumbnails at their positions, or a
colour-coded scatter when there are too many points)."""
from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FvisError
from ..files import atomic_write, write_json
from .activations import FolderActivations, Images, folder_activations, view_images
from .embed import check_method, embed

LABELS = ("from-names", "top1")
_CLASS_FILE = re.compile(r"^(\d+)_")


@dataclass
class FeatureMap:
    """``xy`` ``(N, 2)`` in [0, 1] (x right, y down), one row per view of ``acts``; ``labels`` and
    ``top1`` (the model's top-1 class name of each view) per row."""

    acts: FolderActivations
    xy: torch.Tensor
    labels: list[str]
    top1: list[str]
    top1_index: list[int]
    method: str
    seed: int
    seconds_embed: float


def name_label(name: str, class_names=None) -> str:
    """The label a file name carries: ``"<class index>_..."`` -> the class name, else the stem up
    to the first ``_`` (``chelsea_2.png`` -> ``chelsea``)."""
    m = _CLASS_FILE.match(name)
    if m and class_names and int(m.group(1)) < len(class_names):
        return class_names[int(m.group(1))]
    return Path(name).stem.split("_")[0]


def feature_map(model, images: Images, layer: str, *, method: str = "tsne", labels: str = "from-names",
                views: int = 1, seed: int = 0, batch_size: int = 16, cache=None, progress: bool = False) -> FeatureMap:
    """Embed ``layer``'s pooled activations of every view of every image in 2-D (seeded)."""
    if labels not in LABELS:
        raise FvisError(f"unknown labels {labels!r}: choose from {', '.join(LABELS)}")
    check_method(method)  # missing umap-learn / scikit-learn: fail before the work
    acts = folder_activations(model, images, layer, pool="mean", views=views, logits=True, seed=seed,
                              batch_size=batch_size, cache=cache, progress=progress)
    start = time.perf_counter()
    xy = embed(acts.values, method, seed)
    seconds = time.perf_counter() - start
    names = model.class_names
    top = acts.logits.argmax(1).tolist() if acts.logits is not None and acts.logits.dim() == 2 else [-1] * len(xy)
    top1 = [names[t] if names and 0 <= t < len(names) else str(t) for t in top]
    rows = (acts.image * acts.views + acts.view).tolist()
    top, top1 = [top[r] for r in rows], [top1[r] for r in rows]
    lab = top1 if labels == "top1" else [name_label(acts.files[i], names) for i in acts.image.tolist()]
    return FeatureMap(acts, xy, lab, top1, top, method, seed, seconds)


def save_map(fmap: FeatureMap, images: Images, out: Path, model, max_thumbnails: int = 120,
             title: str | None = None, settings: dict | None = None) -> list[Path]:
    """``map.csv``, ``map.json`` and ``map.png`` in ``out``; returns the paths."""
    out = Path(out)
    acts = fmap.acts
    points = [{"file": acts.files[int(i)], "view": int(v), "x": round(float(x), 6), "y": round(float(y), 6),
               "label": lab, "top1": t, "top1_name": tn}
              for i, v, (x, y), lab, t, tn in zip(acts.image, acts.view, fmap.xy.tolist(), fmap.labels,
                                                  fmap.top1_index, fmap.top1)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(points[0]))
    writer.writeheader()
    writer.writerows(points)
    paths = [atomic_write(out / "map.csv", lambda f: f.write(buf.getvalue().encode()))]
    paths.append(write_json({"model": model.name, "layer": acts.layer, "method": fmap.method, "seed": fmap.seed,
                             "views": acts.views, "images": len(acts.files), "skipped": acts.skipped,
                             "settings": settings or {}, "points": points}, out / "map.json"))
    paths.append(plot_map(fmap, images, out / "map.png", model, max_thumbnails, title))
    return paths


def plot_map(fmap: FeatureMap, images: Images, path: Path, model, max_thumbnails: int = 120,
             title: str | None = None, ax=None) -> Path | None:
    """Thumbnails at their map positions, framed in their label's colour (a scatter when there are
    more than ``max_thumbnails`` points). With ``ax``: draw there and return ``None``."""
    import matplotlib  # optional heavy dependency, as in fvis.entangle
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    own = ax is None
    if own:
        fig = Figure(figsize=(9, 8), dpi=110)
        ax = fig.subplots()
    kinds = sorted(set(fmap.labels))
    cmap = matplotlib.colormaps["tab10" if len(kinds) <= 10 else "tab20"]
    colour = {k: cmap(i % cmap.N) for i, k in enumerate(kinds)}
    xy = fmap.xy.numpy()
    if len(xy) <= max_thumbnails:
        zoom_px = max(24, min(72, int(700 / max(len(xy), 1) ** 0.5)))
        thumbs = view_images(images, fmap.acts, (zoom_px, zoom_px), range(len(xy)))
        for (x, y), im, lab in zip(xy, thumbs, fmap.labels):
            box = OffsetImage(im.permute(1, 2, 0).numpy(), zoom=1.0)
            ax.add_artist(AnnotationBbox(box, (x, y), frameon=True, pad=0.15,
                                         bboxprops={"edgecolor": colour[lab], "linewidth": 2.5}))
        ax.scatter(xy[:, 0], xy[:, 1], s=0)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=10, c=[colour[l] for l in fmap.labels])
    for k in kinds:
        ax.scatter([], [], color=colour[k], label=k, s=40)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(1.08, -0.08)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{model.name} {fmap.acts.layer}: {fmap.method} of pooled activations "
                 f"({len(xy)} points)", fontsize=10)
    if not own:
        return None
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
