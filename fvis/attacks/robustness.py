"""An AutoAttack-style robustness report: attacks run in sequence, each only on the images still
correctly classified, success judged on the saved 8-bit images within the eps-ball; optional
evaluators judge the same adversarial images (transfer)."""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..classes import resolve_class
from ..errors import FvisError, suggest
from ..files import load_image, save_image, versions, write_json
from ..inline import Displayable, Panel
from ..models import ImageModel
from ..naming import unique
from .methods import attack

# report name -> (method, fixed options)
ATTACKS = {"apgd-ce": ("apgd", {"loss": "ce"}), "apgd-dlr": ("apgd", {"loss": "dlr"}),
           "apgd-t": ("apgd-t", {}), "square": ("square", {}), "pgd": ("pgd", {}), "cw": ("cw", {})}
DEFAULT_ATTACKS = ("apgd-ce", "apgd-t", "square")


@dataclass
class RobustnessReport(Displayable):
    """``clean_accuracy``; ``robust_accuracy`` after all attacks; ``per_attack``: attack name ->
    robust accuracy after it; ``attacks``: per attack, images attacked / fooled, seconds, queries;
    ``items``: per image, the label, clean prediction, which attack fooled it (or ``None``), the
    adversarial prediction, norms and queries; ``adversarial``: the worst-case images (the clean
    image where no attack succeeded); ``evaluators``: name -> accuracies on clean and on
    adversarial images."""

    clean_accuracy: float
    robust_accuracy: float
    per_attack: dict[str, float]
    attacks: list[dict]
    items: list[dict]
    adversarial: torch.Tensor
    evaluators: dict[str, dict] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "per_attack": self.per_attack, "attacks": self.attacks, "evaluators": self.evaluators,
                "settings": self.settings, "seconds": round(self.seconds, 3),
                "success_judged_on": "the saved 8-bit PNGs, re-classified, norm <= eps", "items": self.items}

    def _panel(self) -> Panel:
        """The worst-case images, each labelled with its class, the attack that fooled it and the new
        prediction; the accuracies as key figures and one table row per attack."""
        labels = [f"{it['label_name']}\n" + (f"{it['fooled_by']}: {it.get('adversarial_pred', '')}" if it["fooled_by"]
                                              else "robust" if it["clean_correct"] else f"wrong: {it['clean_pred']}")
                  for it in self.items]
        figures = {"clean accuracy": self.clean_accuracy, "robust accuracy": self.robust_accuracy,
                   **{f"after {k}": v for k, v in self.per_attack.items()}, "seconds": self.seconds}
        return Panel("robustness", list(self.adversarial), labels, figures, table=list(self.attacks))


def check_attacks(names: Sequence[str]) -> list[str]:
    names = list(names)
    for n in names:
        if n not in ATTACKS:
            raise FvisError(f"unknown attack {n!r}: choose from {', '.join(ATTACKS)}.{suggest(n, ATTACKS)}")
    if not names:
        raise FvisError("no attacks given")
    return names


def _options(name: str, steps: int, queries: int, restarts: int, targets: int, seed: int, progress: bool) -> dict:
    method, fixed = ATTACKS[name]
    options = {"seed": seed, "progress": progress, **fixed}
    if method in ("apgd", "apgd-t", "pgd"):
        options.update(steps=steps, restarts=restarts)
    if method == "apgd-t":
        options["targets"] = targets
    if method == "square":
        options.update(steps=queries, restarts=restarts)
    return options


def robustness(model: ImageModel, images: torch.Tensor, labels: Sequence[int] | torch.Tensor, *, eps: float,
               norm: str = "linf", attacks: Sequence[str] = DEFAULT_ATTACKS,
               evaluators: dict[str, ImageModel] | None = None, steps: int = 100, queries: int = 5000,
               restarts: int = 1, targets: int = 9, seed: int = 0, names: Sequence[str] | None = None,
               progress: bool = True) -> RobustnessReport:
    """Run ``attacks`` (names in :data:`ATTACKS`) in sequence on ``images`` ``(N, C, H, W)`` in
    [0, 1] with true ``labels``; each attack sees only the images no earlier attack fooled and
    that the model classifies correctly. An image counts as fooled when its saved 8-bit
    adversarial image is misclassified and within ``eps`` (``norm``). ``steps``: APGD/PGD steps;
    ``queries``: Square's budget; ``targets``: APGD-T's top-k. ``names``: per-image names."""
    if not eps > 0:
        raise FvisError(f"eps must be > 0, got {eps}")
    if norm not in ("linf", "l2"):
        raise FvisError(f"norm must be linf or l2, got {norm!r}")
    attacks = check_attacks(attacks)
    start = time.perf_counter()
    device = next(model.parameters()).device
    n = images.shape[0]
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() != n:
        raise FvisError(f"{labels.numel()} labels for {n} images")
    classes = len(model.class_names) if model.class_names else None
    if classes and (labels.min() < 0 or labels.max() >= classes):
        raise FvisError(f"label out of range: the model has {classes} classes (valid 0..{classes - 1})")
    clean = (images.detach().float().clamp(0, 1).to(device) * 255).round() / 255
    with torch.no_grad():
        pred = model(clean).argmax(1).cpu()
    correct = pred == labels
    robust = correct.clone()
    worst = clean.cpu().clone()
    fooled_by: list[str | None] = [None] * n
    norms_of = torch.zeros(n, 2)
    queries_of = torch.zeros(n, dtype=torch.long)
    per_attack, details = {}, []
    for name in attacks:
        todo = robust.nonzero().flatten()
        t0, fooled_here, q = time.perf_counter(), 0, None
        if todo.numel():
            method, _ = ATTACKS[name]
            result = attack(model, clean[todo.to(device)], method=method, labels=labels[todo],
                            eps=eps, norm=norm, **_options(name, steps, queries, restarts, targets, seed, progress))
            size = result.linf if norm == "linf" else result.l2
            ok = result.success & (size <= eps + 1e-6)
            for j, i in enumerate(todo.tolist()):
                if result.queries is not None:
                    queries_of[i] += int(result.queries[j])
                if ok[j]:
                    robust[i], worst[i], fooled_by[i] = False, result.adversarial[j], name
                    norms_of[i] = torch.stack([result.linf[j], result.l2[j]])
            fooled_here = int(ok.sum())
            q = None if result.queries is None else float(result.queries.float().median())
        per_attack[name] = float(robust.float().mean())
        details.append({"attack": name, "attacked": int(todo.numel()), "fooled": fooled_here,
                        "robust_accuracy_after": per_attack[name], "seconds": round(time.perf_counter() - t0, 3),
                        "median_queries": q, "options": {k: v for k, v in _options(
                            name, steps, queries, restarts, targets, seed, False).items() if k != "progress"}})
    with torch.no_grad():
        adv_logits = model(worst.to(device)).cpu()
    adv_pred = adv_logits.argmax(1)
    names = list(names) if names is not None else [f"{i:04d}" for i in range(n)]
    cls_names = model.class_names or [str(i) for i in range(adv_logits.shape[1])]
    items = [{"image": names[i], "label": int(labels[i]), "label_name": cls_names[int(labels[i])],
              "clean_pred": cls_names[int(pred[i])], "clean_correct": bool(correct[i]), "fooled_by": fooled_by[i],
              "robust": bool(robust[i]), "adversarial_pred": cls_names[int(adv_pred[i])],
              "linf_255": float(norms_of[i, 0]) * 255, "l2": float(norms_of[i, 1]), "queries": int(queries_of[i])}
             for i in range(n)]
    report = RobustnessReport(clean_accuracy=float(correct.float().mean()), robust_accuracy=float(robust.float().mean()),
                              per_attack=per_attack, attacks=details, items=items, adversarial=worst,
                              settings={"model": model.name, "eps": eps, "eps_255": eps * 255, "norm": norm,
                                        "attacks": attacks, "steps": steps, "queries": queries, "restarts": restarts,
                                        "targets": targets, "seed": seed, "images": n},
                              seconds=time.perf_counter() - start)
    for ev_name, ev in (evaluators or {}).items():
        report.evaluators[ev_name] = transfer(ev, clean.cpu(), worst, labels, [f is not None for f in fooled_by])
    return report


@torch.no_grad()
def transfer(evaluator: ImageModel, clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
             fooled: Sequence[bool]) -> dict:
    """Another model's accuracy on the clean and on the adversarial images (all of them, and the
    ones that fooled the source model); its input is the source model's crop, as saved."""
    device = next(evaluator.parameters()).device
    c = evaluator(clean.to(device)).argmax(1).cpu() == labels
    a = evaluator(adversarial.to(device)).argmax(1).cpu() == labels
    f = torch.as_tensor(list(fooled), dtype=torch.bool)
    return {"clean_accuracy": float(c.float().mean()), "adversarial_accuracy": float(a.float().mean()),
            "transferred": int((f & c & ~a).sum()), "fooled_on_source": int(f.sum()),
            "transfer_rate": float((f & c & ~a).sum()) / max(int((f & c).sum()), 1)}


def resolve_labels(spec: str, paths: Sequence[Path], model: ImageModel) -> list[int] | None:
    """``clean-top1`` (``None``: the model's clean predictions), ``from-names`` (a class name in
    each file name, e.g. ``goldfinch_01.jpg``), or a CSV / JSON file mapping image file names or
    stems to class indices or names. Every image must be covered."""
    names = model.class_names
    if spec == "clean-top1":
        return None
    if spec == "from-names":
        if not names:
            raise FvisError("--labels from-names needs a model with class names")
        table = sorted(((n.lower().replace(" ", "_").replace("-", "_"), i) for i, n in enumerate(names)),
                       key=lambda t: -len(t[0]))
        out = []
        for p in paths:
            stem = Path(p).stem.lower().replace(" ", "_").replace("-", "_")
            hit = next((i for key, i in table if key in stem), None)
            if hit is None:
                raise FvisError(f"no class name in the file name {Path(p).name!r} (--labels from-names)")
            out.append(hit)
        return out
    file = Path(spec)
    if not file.is_file():
        raise FvisError(f"labels file not found: {spec} (or use from-names / clean-top1)")
    try:
        if file.suffix.lower() == ".json":
            mapping = {str(k): v for k, v in json.loads(file.read_text()).items()}
        else:
            with file.open(newline="") as fh:
                rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
            if rows and rows[0][0].strip().lower() in ("image", "file", "name"):
                rows = rows[1:]
            mapping = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    except (ValueError, OSError, IndexError) as e:
        raise FvisError(f"cannot read labels file {spec}: {e}") from None
    out = []
    for p in paths:
        key = next((k for k in (Path(p).name, Path(p).stem) if k in mapping), None)
        if key is None:
            raise FvisError(f"labels file {spec} has no label for {Path(p).name}")
        value = mapping[key]
        out.append(resolve_class(value if isinstance(value, str) else int(value), names,
                                 None if names else 1000))
    return out


def robustness_files(model: ImageModel, paths: Sequence[Path], out: Path, *, labels: str = "clean-top1",
                     evaluators: dict[str, ImageModel] | None = None, min_side: int = 32, **kwargs) -> RobustnessReport:
    """:func:`robustness` on image files (resized, centre crop, 8-bit), writing ``report.json``,
    ``report.md``, ``per_image.csv`` and ``<stem>_adv.png`` for each fooled image to ``out``.
    Labels and files are checked before any attack runs."""
    attacks = check_attacks(kwargs.get("attacks", DEFAULT_ATTACKS))
    kwargs["attacks"] = attacks
    images = torch.stack([load_image(p, model.input_size, model.channels, min_side=min_side) for p in paths])
    given = resolve_labels(labels, paths, model)
    if given is None:
        with torch.no_grad():
            given = model(images.to(next(model.parameters()).device)).argmax(1).cpu().tolist()
    stems = unique(Path(p).stem for p in paths)
    report = robustness(model, images, given, evaluators=evaluators, names=stems, **kwargs)
    report.settings["labels"] = labels
    save_report(report, Path(out))
    return report


def save_report(report: RobustnessReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(report.items):
        if item["fooled_by"]:
            save_image(report.adversarial[i], out / f"{item['image']}_adv.png")
    write_json({**report.to_json(), "versions": versions()}, out / "report.json")
    keys = ["image", "label", "label_name", "clean_pred", "clean_correct", "fooled_by", "robust", "adversarial_pred",
            "linf_255", "l2", "queries"]
    with (out / "per_image.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows({k: item[k] for k in keys} for item in report.items)
    (out / "report.md").write_text(markdown(report))


def markdown(report: RobustnessReport) -> str:
    s = report.settings
    lines = [f"# Robustness of {s['model']}", "",
             f"{s['images']} images, eps {s['eps_255']:.3g}/255 ({s['norm']}), labels: {s.get('labels', 'given')}; "
             f"success judged on the saved 8-bit PNGs (misclassified, norm <= eps).", "",
             f"- clean accuracy: **{report.clean_accuracy:.1%}**",
             f"- robust accuracy after all attacks: **{report.robust_accuracy:.1%}**", "",
             "| attack | attacked | fooled | robust accuracy after | seconds | median queries |",
             "|---|---:|---:|---:|---:|---:|"]
    for a in report.attacks:
        q = "" if a["median_queries"] is None else f"{a['median_queries']:.0f}"
        lines.append(f"| {a['attack']} | {a['attacked']} | {a['fooled']} | {a['robust_accuracy_after']:.1%} | "
                     f"{a['seconds']:.1f} | {q} |")
    if report.evaluators:
        lines += ["", "Transfer (the same adversarial images judged by other models):", "",
                  "| evaluator | clean accuracy | adversarial accuracy | transfer rate |", "|---|---:|---:|---:|"]
        for name, e in report.evaluators.items():
            lines.append(f"| {name} | {e['clean_accuracy']:.1%} | {e['adversarial_accuracy']:.1%} | "
                         f"{e['transfer_rate']:.1%} ({e['transferred']}/{e['fooled_on_source']}) |")
    lines += ["", "Per image: `per_image.csv`; adversarial images: `<image>_adv.png`.", ""]
    return "\n".join(lines)
