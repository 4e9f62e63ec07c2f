"""fvis.concepts.tcav vs captum.concept.TCAV on EfficientNet-Lite0: wall time, scores, same-CAV agreement.

Same images (offline: skimage photos, random crops of ``coffee`` as the class images of
``espresso``, random crops of four other photos as the random pool, procedural stripes and dots as
the two concepts), same layer, same random sets (captum's random concept ``R_i`` holds exactly the
images of fvis's run ``i``), same number of runs. captum is a benchmark-only dependency:
``pip install --no-deps captum`` (its default classifier is scikit-learn's SGDClassifier).

    python scripts/bench_tcav.py --runs 20 --out results/tcav                      # the comparison
    python scripts/bench_tcav.py --growth 10,20,50,100 --concept-images 20 --out results/tcav
    python scripts/bench_tcav.py --runs 3 --concept-images 10 --class-images 4     # smoke size

What is timed, per tool, in one process, fvis and captum alternating:

* ``cold``: nothing cached (fvis: a fresh activation cache folder; captum: a fresh ``save_path``).
  Both compute the same experiment: per concept one CAV per random set, and the random-vs-random
  null (captum: the sets ``[R_{i+1}, R_i]``, as its tutorial does for the t-test; fvis: the same
  pairs plus the ``runs x (runs - 1)`` pseudo-concept CAVs of its ``sets`` test, i.e. more CAVs).
* ``warm``: activations cached (fvis: its safetensors cache; captum: its saved AVs, CAV files
  removed so the CAVs are fitted again); captum recomputes the class images' gradients (it has no
  cache for them), fvis reads them from its cache.

Agreement: (a) captum's whole pipeline (its own activations, gradients and scoring) run with fvis's
CAVs through a fixed-weights ``Classifier``: per-run scores must equal fvis's; (b) captum's SGD
CAVs scored by fvis (:func:`fvis.concepts.scores` on fvis's gradients) must equal captum's own
scores; (c) each tool with its own classifier: the mean scores differ only by the classifiers,
compared with the spread over runs (Welch t-test on the run scores).
"""
from __future__ import annotations

import argparse
import json
import platform
import random as pyrandom
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

DEFAULT_LAYER = "_blocks.8"


def photos():
    from skimage import data

    out = []
    for name in ("coffee", "astronaut", "chelsea", "rocket", "immunohistochemistry"):
        a = torch.from_numpy(getattr(data, name)()).float() / 255
        out.append(a.permute(2, 0, 1)[:3])
    return out


def make_images(runs: int, n_concept: int, n_class: int, size: int = 224):
    from fvis import concepts as C

    imgs = photos()
    cls = C.random_crops(imgs[0][None], n_class, size, seed=1, area=(0.4, 1.0))
    per = runs * n_concept // 4 + 1
    pool = torch.cat([C.random_crops(im[None], per, size, seed=10 + i) for i, im in enumerate(imgs[1:])])
    concepts = {"stripes": C.texture("stripes", n_concept, size, 1), "dots": C.texture("dots", n_concept, size, 2)}
    return cls, pool[:runs * n_concept], concepts


def random_sets(pool_n: int, runs: int, m: int, seed: int) -> list[torch.Tensor]:
    """fvis's random sets: its generator's first draw is the pool permutation (fvis/concepts/tcav.py)."""
    perm = torch.randperm(pool_n, generator=torch.Generator().manual_seed(seed))
    return [perm[i * m:(i + 1) * m] for i in range(runs)]


# ----------------------------------------------------------------------------- fvis


def run_fvis(model, layer, target, cls, concepts, pool, runs, cache, seed=0):
    from fvis import concepts as C

    t = time.perf_counter()
    r = C.tcav(model, [layer], target, cls, concepts, pool, runs=runs, cache=cache, seed=seed,
               min_images=min(10, min(len(v) for v in concepts.values())))
    return time.perf_counter() - t, r


# ----------------------------------------------------------------------------- captum


def _loader(x):
    from torch.utils.data import DataLoader, TensorDataset

    from fvis.concepts.activations import CPU_BATCH

    return DataLoader(TensorDataset(x), batch_size=CPU_BATCH,  # the same batch as fvis on the CPU
                      collate_fn=lambda b: torch.stack([t[0] for t in b]))


def captum_concepts(concepts, pool, sets):
    from captum.concept import Concept

    cons = [Concept(i, n, _loader(x)) for i, (n, x) in enumerate(concepts.items())]
    rnds = [Concept(100 + i, f"random_{i}", _loader(pool[s])) for i, s in enumerate(sets)]
    runs = len(sets)
    experimental = [[c, rnds[i]] for c in cons for i in range(runs)] + \
                   [[rnds[(i + 1) % runs], rnds[i]] for i in range(runs)]
    return cons, rnds, experimental


def fixed_classifier(table: dict):
    """A captum ``Classifier`` that returns given unit CAVs instead of fitting: ``table`` maps
    ``(positive concept id, negative concept id)`` to the CAV pointing toward the positive set."""
    from captum.concept._utils.classifier import Classifier

    class Fixed(Classifier):
        def __init__(self) -> None:
            self.v, self.ids = None, None

        def train_and_eval(self, dataloader, **kwargs):
            ids = tuple(dict.fromkeys(int(v) for _, y in dataloader for v in y.tolist()))
            self.v, self.ids = table[ids], ids
            return {"accs": torch.tensor(float("nan"))}

        def weights(self):
            return torch.stack([-self.v, self.v])  # row k points toward classes()[k]

        def classes(self):
            return [self.ids[1], self.ids[0]]

    return Fixed()


def run_captum(model, layer, target, cls, experimental, save_path, classifier=None):
    from captum.concept import TCAV

    pyrandom.seed(0)  # captum shuffles its train/test split with Python's random
    t = time.perf_counter()
    tc = TCAV(model, layers=[f"net.{layer}"], save_path=str(save_path), classifier=classifier)
    out = tc.interpret(cls, experimental_sets=experimental, target=target)
    return time.perf_counter() - t, out, tc


def captum_scores(out, layer, pairs):
    return torch.tensor([out[f"{a.id}-{b.id}"][f"net.{layer}"]["sign_count"][0].item() for a, b in pairs])


def captum_cavs(tc, layer, pairs):
    """captum's CAV of each pair, as a vector pointing toward the pair's first concept."""
    out = []
    for a, b in pairs:
        st = tc.cavs[f"{a.id}-{b.id}"][f"net.{layer}"].stats
        classes = [int(c) for c in st["classes"]]
        out.append(st["weights"][classes.index(a.id)].float())
    return torch.stack(out)


# ----------------------------------------------------------------------------- one comparison


def compare(model, args, runs: int, n_concept: int, agreement: bool, with_captum: bool = True) -> dict:
    from scipy import stats

    from fvis import concepts as C
    from fvis.classes import resolve_class

    target = resolve_class(args.target)
    layer = args.layer
    cls, pool, concepts = make_images(runs, n_concept, args.class_images)
    sets = random_sets(len(pool), runs, n_concept, seed=0)
    cons, rnds, experimental = captum_concepts(concepts, pool, sets)
    row: dict = {"runs": runs, "concept_images": n_concept, "random_set_size": n_concept,
                 "random_pool": len(pool), "class_images": len(cls), "fvis_cavs": (len(concepts) + runs - 1) * runs,
                 "captum_cavs": len(experimental),
                 "fvis_images_forwarded": len(pool) + sum(len(x) for x in concepts.values()),
                 "captum_images_forwarded": sum(len(a.data_iter.dataset) + len(b.data_iter.dataset)
                                                for a, b in experimental)}
    with tempfile.TemporaryDirectory() as tmp:
        fcache, cpath = Path(tmp) / "fvis", Path(tmp) / "captum"
        row["fvis_cold"], r = run_fvis(model, layer, target, cls, concepts, pool, runs, fcache)
        row["fvis_warm"], r = run_fvis(model, layer, target, cls, concepts, pool, runs, fcache)
        assert r.settings["random_size"] == n_concept
        row["fvis_scores"] = {c.name: r.get(c.name, layer).score_mean for c in cons}
        if not with_captum:
            return row
        row["captum_cold"], out, tc = run_captum(model, layer, target, cls, experimental, cpath)
        row["speedup_cold"] = row["captum_cold"] / row["fvis_cold"]
        row["captum_scores"] = {c.name: captum_scores(out, layer, [(c, q) for q in rnds]).mean().item() for c in cons}
        if not agreement:
            return row
        null_pairs = [(rnds[(i + 1) % runs], rnds[i]) for i in range(runs)]
        cap_null = captum_scores(out, layer, null_pairs)
        row["concepts"] = {}
        for c in cons:
            fr = r.get(c.name, layer)
            cap = captum_scores(out, layer, [(c, q) for q in rnds])
            row["concepts"][c.name] = {
                "fvis_score": fr.score_mean, "fvis_std": fr.score_std, "fvis_p": fr.p_value,
                "fvis_p_sets": fr.p_sets, "fvis_cav_accuracy": fr.accuracies.mean().item(),
                "captum_score": cap.mean().item(), "captum_std": cap.std().item(),
                "captum_p": float(stats.ttest_ind(cap.numpy(), cap_null.numpy()).pvalue),
                "own_cavs_welch_p": float(stats.ttest_ind(fr.scores.numpy(), cap.numpy(), equal_var=False).pvalue),
                "fvis_scores": [round(x, 4) for x in fr.scores.tolist()], "captum_scores": cap.tolist()}
        row["null"] = {"fvis_score": r.random[layer].score_mean, "fvis_std": r.random[layer].score_std,
                       "captum_score": cap_null.mean().item(), "captum_std": cap_null.std().item()}
        # (b) captum's SGD CAVs scored by fvis on fvis's own gradients
        from fvis.concepts.activations import compute_gradients

        grads = compute_gradients(model, cls, [layer], target)[layer]
        all_pairs = [(c, q) for c in cons for q in rnds] + null_pairs
        ccavs = captum_cavs(tc, layer, all_pairs)
        row["agree_captum_cavs_max_abs_diff"] = (C.scores(grads, ccavs)[0]
                                                 - captum_scores(out, layer, all_pairs)).abs().max().item()
        # (a) captum's pipeline (its activations on disk from the timed run, its gradients and scoring)
        # with fvis's CAVs; its activation regeneration is skipped here: this run is not timed
        from captum.concept import TCAV

        table = {(c.id, rnds[i].id): r.get(c.name, layer).cavs[i] for c in cons for i in range(runs)}
        table.update({(rnds[(i + 1) % runs].id, rnds[i].id): r.random[layer].cavs[i] for i in range(runs)})
        shutil.rmtree(cpath / "default_model_id")
        regenerate, TCAV.generate_activations = TCAV.generate_activations, lambda self, concept_layers: None
        try:
            _, out2, _ = run_captum(model, layer, target, cls, experimental, cpath, classifier=fixed_classifier(table))
        finally:
            TCAV.generate_activations = regenerate
        ours = torch.cat([r.get(c.name, layer).scores for c in cons] + [r.random[layer].scores])
        row["agree_fvis_cavs_max_abs_diff"] = (captum_scores(out2, layer, all_pairs) - ours).abs().max().item()
        row["agree_n_cavs"] = len(all_pairs)
        fc = torch.cat([r.get(c.name, layer).cavs for c in cons] + [r.random[layer].cavs])
        cos = torch.nn.functional.cosine_similarity(fc, ccavs, dim=1)
        row["cav_cosine_fvis_vs_captum"] = {"concepts_mean": cos[:len(cons) * runs].mean().item(),
                                           "null_mean": cos[len(cons) * runs:].mean().item()}
    return row


def growth_table(rows) -> str:
    lines = ["| runs | random pool | CAVs fvis / captum | images forwarded fvis / captum | fvis cold s | fvis warm s | "
             "captum cold s | speedup |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cap = r.get("captum_cold")
        speed = f"{cap / r['fvis_cold']:.1f}x" if cap else ""
        lines.append(f"| {r['runs']} | {r['random_pool']} | {r['fvis_cavs']} / {r['captum_cavs']} | "
                     f"{r['fvis_images_forwarded']} / {r['captum_images_forwarded']} | {r['fvis_cold']:.1f} | "
                     f"{r['fvis_warm']:.2f} | {f'{cap:.1f}' if cap else 'not run'} | "
                     f"{speed} |")
    return "\n".join(lines)


def write(out: Path, name: str, args, rows, text: str) -> None:
    import captum

    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_tcav.py " + " ".join(args.argv)
    report = {"command": command, "layer": args.layer, "target": args.target, "model": "efficientnet-lite0",
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "captum": captum.__version__, "machine": platform.processor() or platform.machine(), "rows": rows}
    (out / f"bench_tcav_{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"bench_tcav_{name}.md").write_text(f"`{command}`\n\n{text}\n")


def table(rows) -> str:
    return growth_table(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--growth", default=None, help="comma-separated run counts: time against runs, forwards taken out")
    p.add_argument("--concept-images", type=int, default=50, help="images per concept and per random set")
    p.add_argument("--class-images", type=int, default=20)
    p.add_argument("--layer", default=DEFAULT_LAYER)
    p.add_argument("--target", default="espresso")
    p.add_argument("--captum-max-runs", type=int, default=1000, help="growth: run captum only up to this many runs")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import fvis

    warnings.filterwarnings("ignore")  # captum's and scikit-learn's per-CAV warnings (SGD not converged...)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    model = fvis.load("efficientnet-lite0")
    out = Path(args.out) if args.out else None
    if args.growth:
        rows, counts = [], [int(x) for x in args.growth.split(",")]
        for runs in counts:
            rows.append(compare(model, args, runs, args.concept_images, False, runs <= args.captum_max_runs))
            print(json.dumps(rows[-1]), flush=True)
            if out is not None:
                write(out, f"growth_{'-'.join(map(str, counts))}", args, rows, growth_table(rows))
        print(growth_table(rows))
        return
    row = compare(model, args, args.runs, args.concept_images, agreement=True)
    print(json.dumps({k: v for k, v in row.items() if k != "concepts"}, indent=1))
    print(table([row]))
    if out is not None:
        write(out, f"runs{args.runs}", args, [row], table([row]))


if __name__ == "__main__":
    main()
