"""``fvis tcav``: TCAV from the command line, and concept sensitivity of new images with saved CAVs.


Outputs of a TCAV run in ``--out``:

* ``tcav.json``: ``{"schema": "fvis.tcav/1", "settings": {...}, "results": [record...],
  "random": [record...], "versions": {...}}``; a record has ``concept``, ``layer``, ``target``
  (index), ``target_name``, ``score_mean``, ``score_std`` (sign-count TCAV score over runs, sample
  std), ``magnitude_mean``, ``magnitude_std``, ``p_value`` (the chosen test's), ``p_value_runs``,
  ``p_value_sets``, ``p_corrected`` (Bonferroni over concepts x layers), ``significant``
  (``p_corrected < alpha``), ``cav_accuracy`` (mean held-out accuracy), ``cav_accuracy_min``,
  ``runs``, ``scores`` and ``magnitudes`` (per run). ``random`` holds the random-vs-random null per
  layer (no p-values).
* ``tcav.csv``: the records without the per-run lists; ``tcav.png``: bar chart;
  ``cavs.safetensors``: the CAVs (:func:`fvis.concepts.load_cavs`).

``--explain IMAGE|DIR --cavs DIR|FILE``: per image and saved CAV, the directional derivative of the
target logit (mean over runs) and the share of runs where it is positive; printed, and with
``--out`` also ``explain.json`` and ``explain.png``.
"""
from __future__ import annotations

import argparse
import csv
import io as _io
from pathlib import Path

from ..concepts import synthetic
from ..concepts.activations import check_counts, check_layers, check_target
from ..concepts.cavfile import load_cavs, sensitivity
from ..concepts.synthetic import random_crops
from ..concepts.tcav import tcav
from ..datasets import warnings_as_lines
from ..errors import FvisError
from ..files import atomic_write, check_writable, list_images, versions, write_json
from ._args import MODEL_HELP, add_model_args, load_model

HELP = "TCAV: concept sensitivity of a class, significance-tested; --explain for new images"

CSV_COLUMNS = ("concept", "layer", "target", "target_name", "score_mean", "score_std", "magnitude_mean",
               "p_value", "p_value_runs", "p_value_sets", "p_corrected", "significant", "cav_accuracy",
               "cav_accuracy_min", "runs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_args(p)
    p.add_argument("--layer", default=None, help="layer name(s), comma-separated (fvis layers MODEL)")
    p.add_argument("--target", default=None, help="class index or name")
    p.add_argument("--class-images", default=None, help="folder of images of the target class")
    p.add_argument("--concept", action="append", default=[], metavar="NAME=DIR",
                   help="a concept: a folder, or synthetic:stripes|dots|checks|zigzags|colour:NAME (repeatable)")
    p.add_argument("--synthetic-count", type=int, default=50, help="images per synthetic concept")
    p.add_argument("--random", default=None, help="folder of random images (the pool of random sets)")
    p.add_argument("--random-crops", type=int, default=None,
                   help="make this many random crops of the random folder (default: only when it has too few images)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--relative", action="store_true", help="each concept against the union of the others")
    p.add_argument("--cav", default="logistic", choices=["logistic", "svm", "fastcav"])
    p.add_argument("--test", default="runs", choices=["runs", "sets"])
    p.add_argument("--pool", default="flatten", choices=["flatten", "mean"])
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--min-images", type=int, default=10)
    p.add_argument("--random-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    p.add_argument("--explain", default=None, metavar="IMAGE|DIR", help="concept sensitivity of these images")
    p.add_argument("--cavs", default=None, metavar="DIR|FILE", help="saved CAVs for --explain")
    p.add_argument("--out", default=None, help="output folder (required for a TCAV run)")
    p.add_argument("--quiet", action="store_true")


def _concepts(specs, model, count: int, seed: int) -> dict:

    out = {}
    for spec in specs:
        if "=" not in spec:
            raise FvisError(f"--concept {spec!r}: expected NAME=DIR or NAME=synthetic:KIND")
        name, src = (s.strip() for s in spec.split("=", 1))
        if not name:
            raise FvisError(f"--concept {spec!r}: empty name")
        if name in out:
            raise FvisError(f"concept {name!r} given twice")
        if src.startswith("synthetic:"):
            out[name] = synthetic.concept(src.removeprefix("synthetic:"), count, tuple(model.input_size),
                                          seed + 1000 * (len(out) + 1))
        else:
            if not Path(src).is_dir():
                raise FvisError(f"concept {name!r}: not a folder: {src}")
            out[name] = Path(src)
    return out


def _random_pool(args, model, concepts: dict, say):

    files = list_images(args.random)
    sizes = [len(list_images(v)) if isinstance(v, Path) else len(v) for v in concepts.values()]
    need = args.runs * (args.random_size or max(max(sizes), args.min_images))
    crops = args.random_crops
    if crops is None and len(files) < need:
        crops = need
    check_counts(concepts, crops or len(files), args.runs, args.min_images, args.random_size)
    if not crops:
        return Path(args.random)
    say(f"random pool: {crops} random crops of the {len(files)} images in {args.random}")
    return random_crops(args.random, crops, tuple(model.input_size), seed=args.seed)


def run(args) -> None:
    with warnings_as_lines():  # skipped files, low CAV accuracy: one "fvis: warning: ..." line each
        _run(args)


def _run(args) -> None:
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.explain is not None:
        return _explain(args, say)
    missing = [f"--{n.replace('_', '-')}" for n in ("layer", "target", "class_images", "random", "out")
               if getattr(args, n) in (None, "")]
    if not args.concept:
        missing.append("--concept")
    if missing:
        raise FvisError(f"fvis tcav needs {', '.join(missing)} (or --explain IMAGE --cavs DIR)")
    out = check_writable(args.out)
    for flag, folder in (("--class-images", args.class_images), ("--random", args.random)):
        if not Path(folder).is_dir():
            raise FvisError(f"{flag}: not a folder: {folder}")
    model = load_model(args)
    # every check before the first line of output
    layers = check_layers(model, [l.strip() for l in args.layer.split(",") if l.strip()])
    check_target(model, args.target)
    concepts = _concepts(args.concept, model, args.synthetic_count, args.seed)
    for name, src in concepts.items():
        if isinstance(src, Path) and src.resolve() == Path(args.random).resolve():
            raise FvisError(f"concept {name!r} and --random are the same folder ({src})")
    check_counts(concepts, None, args.runs, args.min_images)
    random = _random_pool(args, model, concepts, say)
    say(f"TCAV of {args.target!r} on {model.name}: {len(concepts)} concept(s) x {len(layers)} layer(s), "
        f"{args.runs} runs, {args.cav} CAVs")
    result = tcav(model, layers, args.target, Path(args.class_images), concepts, random, runs=args.runs,
                  cav=args.cav, relative=args.relative, seed=args.seed, pool=args.pool, alpha=args.alpha,
                  test=args.test, random_size=args.random_size, min_images=args.min_images,
                  cache=False if args.no_cache else None)
    report = result.to_json() | {"versions": versions()}
    write_json(report, out / "tcav.json")
    _write_csv(result.records(), out / "tcav.csv")
    result.save_cavs(out / "cavs.safetensors")
    plot_tcav(result, out / "tcav.png")
    say(table(result))
    say(f"wrote {out / 'tcav.json'}, tcav.csv, tcav.png, cavs.safetensors")


def _write_csv(records, path: Path) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def table(result) -> str:
    lines = [f"{'concept':<16} {'layer':<14} {'score':>13} {'random':>13} {'p':>9} {'p_corr':>9} {'acc':>5}  sig"]
    for r in result.results:
        n = result.random[r.layer]
        lines.append(f"{r.concept[:16]:<16} {r.layer[:14]:<14} {r.score_mean:6.3f}±{r.score_std:5.3f} "
                     f"{n.score_mean:6.3f}±{n.score_std:5.3f} {r.p_value:9.2e} {r.p_corrected:9.2e} "
                     f"{r.accuracies.mean().item():5.2f}  {'*' if r.significant else ''}")
    return "\n".join(lines)


def plot_tcav(result, path: Path) -> Path:
    """Grouped bars: TCAV score (mean ± std over runs) per layer and concept, the random-vs-random
    baseline in grey, ``*`` over significant bars (non-significant bars hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(result.random)
    names = list(dict.fromkeys(r.concept for r in result.results))
    k = len(names) + 1
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + len(layers) * k * 0.55), 4.2), dpi=120)
    colors = plt.get_cmap("tab10")
    for li, layer in enumerate(layers):
        for ci, name in enumerate(names):
            r = result.get(name, layer)
            x = li + (ci - (k - 1) / 2) * width
            ax.bar(x, r.score_mean, width * 0.92, yerr=r.score_std, capsize=3, color=colors(ci % 10),
                   hatch=None if r.significant else "//", edgecolor="black", linewidth=0.6,
                   label=name if li == 0 else None)
            if r.significant:
                ax.text(x, min(1.04, r.score_mean + r.score_std + 0.02), "*", ha="center", va="bottom", fontsize=14)
        n = result.random[layer]
        x = li + (k - 1 - (k - 1) / 2) * width
        ax.bar(x, n.score_mean, width * 0.92, yerr=n.score_std, capsize=3, color="lightgrey", edgecolor="black",
               linewidth=0.6, label="random (null)" if li == 0 else None)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("TCAV score (share of class images)")
    ax.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
    s = result.settings
    ax.set_title(f"TCAV: {s.get('target_name')} on {s.get('model')}\n({s.get('cav')}, {s.get('runs')} runs"
                 f"{', relative' if s.get('relative') else ''}); * significant, hatched not", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write(Path(path), lambda f: f.write(buf.getvalue()))


def _explain(args, say) -> None:
    if not args.cavs:
        raise FvisError("--explain needs --cavs DIR|FILE (the cavs.safetensors of a TCAV run)")
    cs = load_cavs(args.cavs)
    out = check_writable(args.out) if args.out else None
    if not Path(args.explain).exists():
        raise FvisError(f"--explain: not found: {args.explain}")
    model = load_model(args)
    sens = sensitivity(model, args.explain, cs, target=args.target)
    say(f"concept sensitivity of {sens.target_name!r} (directional derivative along each CAV, mean over runs; "
        f"share of runs > 0)")
    for i, img in enumerate(sens.images):
        say(img)
        for j, e in enumerate(sens.entries):
            tag = " (random)" if e["random"] else ""
            say(f"  {e['concept'] + tag:<24} {e['layer']:<16} {sens.derivative[i, j].item():+10.4g}  "
                f"{sens.positive_share[i, j].item():4.2f}")
    if out is not None:
        write_json({"schema": "fvis.tcav-explain/1", "cavs": str(args.cavs), "target": sens.target,
                    "target_name": sens.target_name, "records": sens.records()}, out / "explain.json")
        plot_explain(sens, out / "explain.png")
        say(f"wrote {out / 'explain.json'}, explain.png")


def plot_explain(sens, path: Path) -> Path:
    """A heatmap, concept CAVs x images: the share of CAV runs along which the target logit rises
    (1: every run, green; 0: none, red), annotated with that share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = [j for j, e in enumerate(sens.entries) if not e["random"]]
    labels = [f"{sens.entries[j]['concept']} @ {sens.entries[j]['layer']}" for j in keep]
    share = sens.positive_share[:, keep].T.numpy()  # (concepts, images)
    n_img = len(sens.images)
    fig, ax = plt.subplots(figsize=(2.2 + 0.9 * n_img + 0.06 * max(map(len, labels)), 1.3 + 0.42 * len(keep)),
                           dpi=120)
    im = ax.imshow(share, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for r in range(share.shape[0]):
        for c in range(share.shape[1]):
            ax.text(c, r, f"{share[r, c]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_yticks(range(len(keep)), labels, fontsize=8)
    ax.set_xticks(range(n_img), [s[:18] for s in sens.images], rotation=30, ha="right", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="share of CAV runs: d logit > 0")
    ax.set_title(f"concept sensitivity of {sens.target_name}", fontsize=9)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write(Path(path), lambda f: f.write(buf.getvalue()))
