"""CAVs on disk (safetensors) and the concept sensitivity of new images along saved CAVs (no refit).

File layout: tensors ``cav.<i>`` ``(runs, D)`` unit CAVs, ``bias.<i>``, ``norm.<i>``, ``accuracy.<i>``,
``scores.<i>`` for entry ``i``; the metadata key ``fvis.tcav`` holds JSON: ``entries`` (``concept``,
``layer``, ``random`` flag per ``i``), ``layer_shapes``, and the TCAV settings (model, model
fingerprint, target, pool, classifier...).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save

from objectives import Objective, direction

from ..classes import resolve_class
from ..errors import FvisError
from ..files import atomic_write as _atomic_write, list_images, load_image
from .activations import compute_gradients, load_images, model_fingerprint

META_KEY = "fvis.tcav"


@dataclass
class CAVSet:
    entries: list[dict]                 # {"concept", "layer", "random"}
    cavs: list[torch.Tensor]            # (runs, D) per entry
    bias: list[torch.Tensor]
    norm: list[torch.Tensor]
    accuracy: list[torch.Tensor]
    settings: dict
    layer_shapes: dict[str, list[int]]

    def mean_cav(self, i: int) -> torch.Tensor:
        """The unit mean direction of entry ``i``'s runs."""
        v = self.cavs[i].float().mean(0)
        return v / v.norm().clamp_min(1e-12)

    def find(self, concept: str, layer: str | None = None) -> int:
        hits = [i for i, e in enumerate(self.entries) if e["concept"] == concept and (layer is None or e["layer"] == layer)]
        if not hits:
            have = sorted({f"{e['concept']}@{e['layer']}" for e in self.entries})
            raise FvisError(f"no CAV for concept {concept!r}{f' at layer {layer!r}' if layer else ''}; "
                            f"the file has {', '.join(have)}")
        return hits[0]


def save_cavs(result, path: str | Path) -> Path:
    """Write a :class:`~fvis.concepts.tcav.TCAVResult`'s CAVs (concepts and random nulls) to ``path``."""

    tensors, entries = {}, []
    items = [(r, False) for r in result.results] + [(r, True) for r in result.random.values()]
    for i, (r, is_random) in enumerate(items):
        entries.append({"concept": r.concept, "layer": r.layer, "random": is_random})
        tensors[f"cav.{i}"] = r.cavs.float().contiguous()
        tensors[f"bias.{i}"] = r.bias.float().contiguous()
        tensors[f"norm.{i}"] = r.weights_norm.float().contiguous()
        tensors[f"accuracy.{i}"] = r.accuracies.float().contiguous()
        tensors[f"scores.{i}"] = r.scores.float().contiguous()
    meta = {"entries": entries, "settings": result.settings, "layer_shapes": result.layer_shapes}
    blob = save(tensors, metadata={META_KEY: json.dumps(meta)})
    return _atomic_write(Path(path), lambda f: f.write(blob))


def load_cavs(path: str | Path) -> CAVSet:
    """Read a file written by :func:`save_cavs` (a folder: its ``cavs.safetensors``)."""

    path = Path(path)
    if path.is_dir():
        path = path / "cavs.safetensors"
    if not path.is_file():
        raise FvisError(f"CAV file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            t = {k: f.get_tensor(k) for k in f.keys()}
        n = len(meta["entries"])
        return CAVSet(meta["entries"], [t[f"cav.{i}"] for i in range(n)], [t[f"bias.{i}"] for i in range(n)],
                      [t[f"norm.{i}"] for i in range(n)], [t[f"accuracy.{i}"] for i in range(n)],
                      meta["settings"], meta["layer_shapes"])
    except Exception as e:  # safetensors' own errors derive from Exception only
        raise FvisError(f"{path} is not an fvis CAV file ({type(e).__name__}: {e})") from None


@dataclass
class Sensitivity:
    """Per image and saved CAV: the directional derivative of the target logit along the CAV."""
    entries: list[dict]            # as in the CAV file
    images: list[str]
    target: int
    target_name: str
    derivative: torch.Tensor       # (N, E): mean over runs of grad . cav
    positive_share: torch.Tensor   # (N, E): share of runs with a positive derivative

    def records(self) -> list[dict]:
        return [{"image": img, "concept": e["concept"], "layer": e["layer"], "random": e["random"],
                 "target": self.target, "derivative": self.derivative[i, j].item(),
                 "positive_share": self.positive_share[i, j].item()}
                for i, img in enumerate(self.images) for j, e in enumerate(self.entries)]


def sensitivity(model, images, cavs: CAVSet | str | Path, target: int | str | None = None,
                names: Sequence[str] | None = None, batch_size: int | None = None) -> Sensitivity:
    """Concept sensitivity of new ``images`` (a tensor ``(N, 3, H, W)`` in [0, 1], or a folder)
    along every CAV in ``cavs`` (a :class:`CAVSet` or a file): one forward and backward per image,
    no refit. ``target``: default the class the CAVs were tested for."""

    cs = cavs if isinstance(cavs, CAVSet) else load_cavs(cavs)
    st = cs.settings
    class_names = getattr(model, "class_names", None)
    if target is None:
        target = st["target"]
    elif class_names is not None:
        target = resolve_class(target, class_names)
    else:
        target = int(target)
    if st.get("model_fingerprint") and st["model_fingerprint"] != model_fingerprint(model):
        warnings.warn(f"fvis: these CAVs were fitted on model {st.get('model')!r} with other weights")
    if isinstance(images, torch.Tensor):
        x, labels = load_images(images, model), names or [str(i) for i in range(len(images))]
    else:
        p = Path(images)
        if p.is_dir():

            files = list_images(p)
            labels = [f.name for f in files]
            x = load_images(p, model)
        else:

            x, labels = load_image(p, tuple(model.input_size), getattr(model, "channels", 3))[None], [p.name]
    layers = list(dict.fromkeys(e["layer"] for e in cs.entries))
    grads = compute_gradients(model, x, layers, target, st["pool"], batch_size)
    deriv, share = [], []
    for i, e in enumerate(cs.entries):
        g = grads[e["layer"]]
        if g.shape[1] != cs.cavs[i].shape[1]:
            raise FvisError(f"CAV for {e['concept']}@{e['layer']} has {cs.cavs[i].shape[1]} entries but the "
                            f"layer gives {g.shape[1]} (another model or input size?)")
        S = g @ cs.cavs[i].float().T  # (N, runs)
        deriv.append(S.mean(1))
        share.append((S > 0).float().mean(1))
    tname = class_names[target] if class_names is not None else str(target)
    return Sensitivity(cs.entries, labels, target, tname, torch.stack(deriv, 1), torch.stack(share, 1))


def cav_objective(cavs: CAVSet | str | Path, concept: str, layer: str | None = None, cossim_pow: float = 0.0):
    """A saved CAV as a direction objective to render (``fvis.optimize``/``fvis.render``): what the
    network's concept looks like. ``pool="mean"`` CAVs are channel directions
    (:func:`objectives.direction`, any image size); ``pool="flatten"`` CAVs are whole activation maps,
    scored as ``<activation map, CAV>`` (the image must have the model's input size)."""

    cs = cavs if isinstance(cavs, CAVSet) else load_cavs(cavs)
    i = cs.find(concept, layer)
    layer = cs.entries[i]["layer"]
    v = cs.mean_cav(i)
    name = f"cav:{concept}@{layer}"
    if cs.settings.get("pool") == "mean":
        obj = direction(layer, v, cossim_pow)
        obj.name = name
        return obj
    shape = tuple(cs.layer_shapes[layer])

    def fn(acts):
        a = acts[layer]
        return a.flatten(1) @ v.to(a.device, a.dtype)

    def check(acts):
        got = tuple(acts[layer].shape[1:])
        if got != shape:
            raise FvisError(f"{name}: the CAV was fitted on {layer} maps of shape {shape}, this input gives {got}; "
                            f"render at the model's input size or fit with pool='mean'")

    return Objective(fn, [layer], name, check)
