"""Feature visualization of a list of objectives in one batched run, and writing the results."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import regularizers as reg
from objectives import Objective, batched

from .engine import Result, optimize
from .files import contact_sheet, save_image, versions, write_json
from .models import ImageModel, top_classes  # noqa: F401  (top_classes: old import path)
from .naming import slug, unique  # noqa: F401  (slug: old import path)
from .params import FourierImage, PixelImage
from .policies import CaptureOptions

PARAMS = {"fourier": FourierImage, "pixel": PixelImage}


def render(model: ImageModel, objectives: Sequence[Objective], *, param: str = "fourier",
           size: int | tuple[int, int] | None = None, steps: int = 256, lr: float = 0.05, seed: int = 0,
           transforms: bool = True, decay_power: float = 1.0, optimizer: str = "adam",
           thresholds=(), progress: bool = True, channels_last: bool | None = None, precision: str = "fp32",
           compile: bool = False, fold: bool = False) -> Result:
    """Render objective ``i`` into batch item ``i``, all in one batched optimization.
    ``channels_last``: the model's input layout (``None``: channels-last on the CPU when the model takes it).
    ``precision`` (``"bf16"``: autocast) and ``compile`` (``torch.compile``): how the model runs
    (:class:`fvis.policies.CaptureOptions`), for GPU runs; ``fold``: run a checked copy of the model with
    BatchNorm and padding folded into its convolutions (faster; same images up to float rounding)."""
    size = size or model.input_size
    device = next(model.parameters()).device
    kwargs = {"decay_power": decay_power} if param == "fourier" else {}
    image = PARAMS[param](size, batch=len(objectives), channels=model.channels, seed=seed, **kwargs).to(device)
    regs = [reg.TransformRobustness()] if transforms else []
    result = optimize(model, batched(objectives), image, regs, steps=steps, lr=lr, optimizer=optimizer,
                      seed=seed, thresholds=thresholds, progress=progress,
                      policies=[CaptureOptions(channels_last=channels_last, precision=precision, compile=compile,
                                                fold=fold)])
    result.labels = [o.name for o in objectives]
    return result


def save_renders(result: Result, model: ImageModel, specs: Sequence[str], out: Path, settings: dict) -> list[Path]:
    """Write ``<name>.png`` + ``<name>.json`` per objective and a contact sheet when there are
    several; returns every path written."""
    out = Path(out)
    names = unique(slug(spec) for spec in specs)
    tops = top_classes(model, result.input)
    written = []
    for i, (spec, name) in enumerate(zip(specs, names)):
        written.extend(save_render(result, i, model, spec, out / name, settings, tops[i]))  # PNG, JSON
    if len(specs) > 1:
        labels = [f"{s} ({float(v):.3g})" for s, v in zip(specs, result.values)]
        written.append(contact_sheet(list(result.input), labels, out / "contact_sheet.png"))
    return written


def save_render(result: Result, i: int, model: ImageModel, spec: str, stem: Path, settings: dict,
                top5: list[dict]) -> tuple[Path, Path]:
    """Item ``i`` of ``result`` as ``<stem>.png``, then ``<stem>.json`` (both atomic: the JSON's
    presence means the item is complete)."""
    stem = Path(stem)
    png = save_image(result.input[i], stem.with_name(stem.name + ".png"))
    return png, write_json({
        "spec": spec, "model": model.name, "settings": settings, "seed": result.seed,
        "objective": float(result.values[i]), "steps": result.steps, "stopped": result.stopped,
        "seconds": round(result.seconds, 3), "seconds_per_step": round(result.seconds_per_step, 5),
        "batch": len(result.input), "top5": top5,
        "history": {"objective": result.history["objective"][:, i].tolist()} if "objective" in result.history else {},
        "versions": versions(),
    }, stem.with_name(stem.name + ".json"))
