"""Score a blind-test folder (``NN.png`` + an answer key ``{"NN.png": class name}``, as
scripts/bench_prototype.py writes them) with ``fvis evaluate``: the images are linked under
``<class index>_NN.png`` names in a temporary folder and evaluated there (Lite0, Lite1 + Lite2).

    python scripts/evaluate_blind_set.py FOLDER KEY.json [FOLDER KEY.json ...]

Prints one line of mean scores per set (used to add the ``transfer_unseen`` column to sets made
before it existed).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import fvis
from fvis.classes import imagenet_classes
from fvis.evaluate import evaluate_folder


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print("usage: evaluate_blind_set.py FOLDER KEY.json [FOLDER KEY.json ...]", file=sys.stderr)
        return 2
    index = {name: i for i, name in enumerate(imagenet_classes())}
    model = fvis.load("efficientnet-lite0")
    evaluators = [fvis.load("efficientnet-lite1"), fvis.load("efficientnet-lite2")]
    for folder, key in zip(argv[::2], argv[1::2]):
        names = json.loads(Path(key).read_text())
        with tempfile.TemporaryDirectory() as tmp:
            for png, name in names.items():
                (Path(tmp) / f"{index[name]}_{png}").symlink_to(Path(folder, png).resolve())
            mean = evaluate_folder(tmp, model, evaluators, out=tmp)["mean"]
        print(f"{folder}: " + " ".join(f"{k} {v:.3f}" for k, v in mean.items() if isinstance(v, float)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
