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
import statistics
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

    return DataLoader(TensorDataset(x), batch_size=8,  # fvis's CPU batch
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


def compare(model, args, runs: int, n_concept: int, agreement: bool) -> dict:
    from scipy import stats

    from fvis import concepts as C
    from fvis.classes import resolve_class

    target = resolve_class(args.target)
    layer = args.layer
    cls, pool, concepts = make_images(runs, n_concept, args.class_images)
    sets = random_sets(len(pool), runs, n_concept, seed=0)
    cons, rnds, experimental = captum_concepts(concepts, pool, sets)
    times = {"fvis_cold": [], "fvis_warm": [], "captum_cold": [], "captum_warm": []}
    row: dict = {"runs": runs, "concept_images": n_concept, "random_set_size": n_concept,
                 "random_pool": len(pool), "class_images": len(cls), "captum_cavs": len(experimental)}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            fcache, cpath = Path(tmp) / f"fvis{rnd}", Path(tmp) / f"captum{rnd}"
            s, r = run_fvis(model, layer, target, cls, concepts, pool, runs, fcache)
            times["fvis_cold"].append(s)
            s, out, tc = run_captum(model, layer, target, cls, experimental, cpath)
            times["captum_cold"].append(s)
            s, r = run_fvis(model, layer, target, cls, concepts, pool, runs, fcache)
            times["fvis_warm"].append(s)
            shutil.rmtree(cpath / "default_model_id")  # the CAV files: refit, keep the activations
            s, out, tc = run_captum(model, layer, target, cls, experimental, cpath)
            times["captum_warm"].append(s)
        assert r.settings["random_size"] == n_concept
        for k, v in times.items():
            row[k] = statistics.median(v)
            row[k + "_all"] = [round(x, 2) for x in v]
        row["speedup_cold"] = row["captum_cold"] / row["fvis_cold"]
        row["speedup_warm"] = row["captum_warm"] / row["fvis_warm"]
        row["fvis_cavs"] = (len(concepts) + runs - 1) * runs
        null_pairs = [(rnds[(i + 1) % runs], rnds[i]) for i in range(runs)]
        cap_null = captum_scores(out, layer, null_pairs)
        row["concepts"] = {}
        for j, c in enumerate(cons):
            pairs = [(c, rnds[i]) for i in range(runs)]
            fr = r.get(c.name, layer)
            cap = captum_scores(out, layer, pairs)
            row["concepts"][c.name] = {
                "fvis_score": fr.score_mean, "fvis_std": fr.score_std, "fvis_p": fr.p_value,
                "fvis_cav_accuracy": fr.accuracies.mean().item(),
                "captum_score": cap.mean().item(), "captum_std": cap.std().item(),
                "captum_p": float(stats.ttest_ind(cap.numpy(), cap_null.numpy()).pvalue),
                "own_cavs_welch_p": float(stats.ttest_ind(fr.scores.numpy(), cap.numpy(), equal_var=False).pvalue),
                "fvis_scores": [round(x, 4) for x in fr.scores.tolist()], "captum_scores": cap.tolist()}
        row["null"] = {"fvis_score": r.random[layer].score_mean, "fvis_std": r.random[layer].score_std,
                       "captum_score": cap_null.mean().item(), "captum_std": cap_null.std().item()}
        if agreement:
            # (b) captum's SGD CAVs scored by fvis on fvis's own gradients
            from fvis.concepts.activations import compute_gradients

            grads = compute_gradients(model, cls, [layer], target)[layer]
            all_pairs = [(c, rnds[i]) for c in cons for i in range(runs)] + null_pairs
            ccavs = captum_cavs(tc, layer, all_pairs)
            fv = C.scores(grads, ccavs)[0]
            row["agree_captum_cavs_max_abs_diff"] = (fv - torch.cat(
                [captum_scores(out, layer, all_pairs)])).abs().max().item()
            # (a) captum's pipeline with fvis's CAVs
            table = {(c.id, rnds[i].id): r.get(c.name, layer).cavs[i] for c in cons for i in range(runs)}
            table.update({(rnds[(i + 1) % runs].id, rnds[i].id): r.random[layer].cavs[i] for i in range(runs)})
            _, out2, _ = run_captum(model, layer, target, cls, experimental, Path(tmp) / "captum_fixed",
                                    classifier=fixed_classifier(table))
            ours = torch.cat([r.get(c.name, layer).scores for c in cons] + [r.random[layer].scores])
            row["agree_fvis_cavs_max_abs_diff"] = (captum_scores(out2, layer, all_pairs) - ours).abs().max().item()
            row["agree_fvis_cavs_n"] = len(all_pairs)
            # cosine between the two tools' CAVs for the same pair
            fc = torch.cat([r.get(c.name, layer).cavs for c in cons] + [r.random[layer].cavs])
            cos = torch.nn.functional.cosine_similarity(fc, ccavs, dim=1)
            row["cav_cosine_fvis_vs_captum"] = {"concepts_mean": cos[:len(cons) * runs].mean().item(),
                                               "null_mean": cos[len(cons) * runs:].mean().item()}
    return row


def table(rows) -> str:
    lines = ["| runs | images (concept / random set / pool / class) | CAVs fvis / captum | fvis cold s | captum cold s | "
             "cold speedup | fvis warm s | captum warm s | warm speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['runs']} | {r['concept_images']} / {r['random_set_size']} / {r['random_pool']} / "
                     f"{r['class_images']} | {r['fvis_cavs']} / {r['captum_cavs']} | {r['fvis_cold']:.1f} | "
                     f"{r['captum_cold']:.1f} | {r['speedup_cold']:.1f}x | {r['fvis_warm']:.2f} | "
                     f"{r['captum_warm']:.1f} | {r['speedup_warm']:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--growth", default=None, help="comma-separated run counts (no agreement checks)")
    p.add_argument("--concept-images", type=int, default=50, help="images per concept and per random set")
    p.add_argument("--class-images", type=int, default=20)
    p.add_argument("--layer", default=DEFAULT_LAYER)
    p.add_argument("--target", default="espresso")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds per tool (medians reported)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import captum

    import fvis

    warnings.filterwarnings("ignore")  # captum's and scikit-learn's per-CAV warnings (SGD not converged...)

    model = fvis.load("efficientnet-lite0")
    growth = [int(x) for x in args.growth.split(",")] if args.growth else None
    rows = []
    for runs in growth or [args.runs]:
        row = compare(model, args, runs, args.concept_images, agreement=growth is None)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "concepts"}, indent=1), flush=True)
    report = {"command": "python scripts/bench_tcav.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
              "layer": args.layer, "target": args.target, "model": "efficientnet-lite0",
              "torch_threads": torch.get_num_threads(), "captum": captum.__version__, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    print(table(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = f"growth_{'-'.join(map(str, growth))}" if growth else f"runs{args.runs}"
        (out / f"bench_tcav_{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / f"bench_tcav_{name}.md").write_text(f"`{report['command']}`\n\n{table(rows)}\n")


if __name__ == "__main__":
    main()
