"""Throughput of whole fvis tasks in items per second, with the reference libraries side by side
(used by ``scripts/bench_engine.py --device cuda`` / ``--full``; see its docstring).

- prototypes: ``fvis.prototype.make_prototypes`` with the ``lucent`` recipe (generation time, the
  closing metrics excluded) vs Lucent 0.1.8's ``render_vis`` on the same class logits;
- attacks: ``fvis.attacks.pgd`` as torchattacks' algorithm (L-inf 8/255, step 2/255, random
  start, every item every step, last iterate) vs ``torchattacks.PGD`` with the same settings;
- prompt inversion: ``fvis.lm.invert`` (embed + snap, 3 tokens, target " dog", fixed steps, no
  early stop) on SmolLM2-135M, one restart per item; no reference library does this.

Each cell is the median of ``rounds`` runs (fvis and the reference alternate) after one warm-up.
"""
from __future__ import annotations

import statistics
import time

import torch

from fvis.attacks import pgd
from fvis.prototype import make_prototypes


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _median_rate(items: int, seconds_of, rounds: int) -> float:
    seconds_of()  # warm-up
    return items / statistics.median(seconds_of() for _ in range(rounds))


def _timed(device, fn) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _photos(batch: int, size: int, device) -> torch.Tensor:
    from photos import photo_crops  # the offline sample photos (scripts/photos.py)

    crops = list(photo_crops(size).values())
    return torch.stack([crops[i % len(crops)] for i in range(batch)]).to(device)


def prototype_rates(model, device, batch, steps, size, rounds, lucent, lucent_step_seconds):
    classes = torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:batch].tolist()

    def fvis_seconds():
        protos = make_prototypes(model, classes, recipe="lucent", steps=steps, size=size, heldout=0, progress=False)
        return sum(p.seconds for p in protos)  # generation only (each item holds its share)

    ours = _median_rate(batch, fvis_seconds, rounds)
    theirs = None
    if lucent is not None:
        theirs = _median_rate(batch, lambda: lucent_step_seconds(lucent, model, classes, batch, steps, size) * steps,
                              rounds)
    return ours, theirs


def attack_rates(model, device, batch, steps, size, rounds, ta):
    x = _photos(batch, size, device)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, alpha = 8 / 255, 2 / 255
    ours = _median_rate(batch, lambda: _timed(device, lambda: pgd(
        model, x, labels=y, eps=eps, steps=steps, step_size=alpha, early_stop=False, best_iterate=False,
        progress=False)), rounds)
    theirs = None
    if ta is not None:
        model.eval()
        attack = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        theirs = _median_rate(batch, lambda: _timed(device, lambda: attack(x, y)), rounds)
    return ours, theirs


def inversion_rates(lm, device, batch, steps, rounds):
    from fvis.lm import invert

    def seconds():
        return invert(lm, " dog", length=3, restarts=batch, steps=steps, time_limit=None, stop_on_success=False,
                      progress=False).seconds

    return _median_rate(batch, seconds, rounds), None


def throughput_table(model, device, batches, steps, size, lucent, lucent_step_seconds, rounds: int = 3) -> list[str]:
    """Markdown lines: one row per task and batch, fvis's and the reference's items per second."""
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
        print("torchattacks is not installed (pip install --no-deps torchattacks): its column stays empty")
    try:
        from fvis.lm import load_lm

        lm, lm_error = load_lm("smollm2-135m", device=device), None
    except Exception as e:  # noqa: BLE001 -- the inversion rows say why they are missing
        lm, lm_error = None, f"{type(e).__name__}: {e}"
    rows = []
    for batch in batches:
        for task, rates, reference in (
                ("prototypes (recipe lucent)", lambda: prototype_rates(model, device, batch, steps, size, rounds,
                                                                       lucent, lucent_step_seconds), "Lucent 0.1.8"),
                ("attack (PGD L-inf 8/255)", lambda: attack_rates(model, device, batch, steps, size, rounds, ta),
                 "torchattacks"),
                ("prompt inversion (SmolLM2-135M, 3 tokens)",
                 lambda: inversion_rates(lm, device, batch, steps, rounds) if lm is not None else (None, None), "-")):
            ours, theirs = rates()
            ratio = f"{ours / theirs:.2f}" if ours and theirs else ""
            rows.append(f"| {task} | {batch} | {'' if ours is None else f'{ours:.2f}'} | {reference} | "
                        f"{'' if theirs is None else f'{theirs:.2f}'} | {ratio} |")
            print(rows[-1], flush=True)
    note = f" Prompt inversion skipped: {lm_error}." if lm_error else ""
    return [f"## Throughput, items per second ({steps} optimization steps per item, median of {rounds} runs)", "",
            "fvis and the reference run on the same model, device and inputs, alternating." + note, "",
            "| task | batch | fvis items/s | reference | reference items/s | fvis / reference |",
            "|---|---:|---:|---|---:|---:|", *rows]
