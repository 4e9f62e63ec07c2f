"""Writing attributions: raw arrays, heatmaps, overlays, JSON and a comparison sheet."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from ..display import colorize, overlay, spotlight
from ..errors import FvisError
from ..files import atomic_write, contact_sheet, save_image, versions, write_json
from ..naming import slug
from .scorer import Attribution


def _item(v, i: int):
    """Batch item ``i`` of a per-item info value, as plain JSON (``None`` for bulky maps)."""
    if isinstance(v, torch.Tensor):
        return v.tolist() if v.dim() == 0 else v[i].item() if v.dim() == 1 else None
    return v


def save_attributions(attributions: Sequence[Attribution], image: torch.Tensor, out: str | Path, *,
                      meta: dict | None = None, fmt: str = "npy", class_names=None) -> list[Path]:
    """Write each attribution of ``image`` ``(C, H, W)``: ``<method>.npy`` (or ``.safetensors``,
    with the heatmap too) holding ``raw`` of one item, ``<method>_heatmap.png``,
    ``<method>_overlay.png`` and ``<method>.json`` (settings, class, score, probability, method
    info such as the IG completeness gap, seconds, versions); for ``mask`` also ``mask_kept.png``. Attributions with several items
    (one class each, same image) get ``_<class name>`` suffixes, and a mask with several items
    also ``mask_shared_*`` (the minimum of the masks). Several outputs: ``comparison.png``."""
    if fmt not in ("npy", "safetensors"):
        raise FvisError(f"unknown raw format {fmt!r}: npy or safetensors")
    out = Path(out)
    image = (image[0] if image.dim() == 4 else image).cpu()
    written, tiles, labels = [], [image], ["input"]

    def name_of(cls: int) -> str:
        return class_names[cls] if class_names and cls >= 0 else (str(cls) if cls >= 0 else "objective")

    for a in attributions:
        items = a.raw.shape[0]
        for i in range(items):
            cls = int(a.target[i])
            stem = a.method if items == 1 else f"{a.method}_{slug(name_of(cls))}"
            raw = a.raw[i].contiguous()
            if fmt == "npy":
                written.append(atomic_write(out / f"{stem}.npy", lambda f: np.save(f, raw.numpy())))
            else:
                data = save_safetensors({"attribution": raw, "heatmap": a.heatmap[i].contiguous()}, metadata={"method": a.method})
                written.append(atomic_write(out / f"{stem}.safetensors", lambda f: f.write(data)))
            written.append(save_image(colorize(a.heatmap[i]), out / f"{stem}_heatmap.png"))
            over = overlay(image, a.heatmap[i])
            written.append(save_image(over, out / f"{stem}_overlay.png"))
            if a.method == "mask":  # the image as the mask keeps it
                written.append(save_image(spotlight(image, a.raw[i, 0]), out / f"{stem}_kept.png"))
            info = {k: _item(v, i) for k, v in a.info.items() if k not in ("cam", "grid", "probability")}
            prob = {"probability": float(a.info["probability"][i])} if "probability" in a.info else {}
            written.append(write_json({
                **(meta or {}), "method": a.method, "class": cls if cls >= 0 else None,
                "class_name": name_of(cls) if cls >= 0 else None, "score": float(a.score[i]), **prob,
                "settings": a.settings, "info": info, "seconds": round(a.seconds, 3),
                "raw": {"file": f"{stem}.{fmt}", "shape": list(raw.shape), "dtype": "float32"},
                "versions": versions(),
            }, out / f"{stem}.json"))
            tiles.append(over)
            gap = f" gap {float(a.info['relative_gap'][i]):.2%}" if "relative_gap" in a.info else ""
            labels.append(a.method + (f" {name_of(cls)}" if items > 1 else "") + gap)
        if a.method == "mask" and items > 1:  # the parts the classes share
            shared = a.raw.amin(0)
            written.append(atomic_write(out / "mask_shared.npy", lambda f: np.save(f, shared.numpy())))
            over = overlay(image, shared[0] / shared.max().clamp_min(1e-12))
            written.append(save_image(over, out / "mask_shared_overlay.png"))
            tiles.append(over)
            labels.append("mask shared: " + ", ".join(name_of(int(c)) for c in a.target))
    if len(tiles) > 2:
        written.append(contact_sheet(tiles, labels, out / "comparison.png", columns=min(len(tiles), 5)))
    return written
