"""`fvis entangle` on real photos with the real Lite0, checked against a hand computation."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision.transforms.v2 import functional as F

from fvis.cli import main
from fvis.entangle import entanglement, ranked_pairs
from fvis.files import load_image

# Lite0's top-1 on these skimage photos (checked: espresso 0.94, Egyptian cat 0.39, missile 0.28)
PHOTOS = {967: "coffee", 285: "chelsea", 657: "rocket"}


def _save(array: np.ndarray, path) -> None:
    img = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255
    img = F.center_crop(F.resize(img, [224], antialias=True), [224, 224])
    Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)


def test_entangle_photos_cli_matches_hand_computation(lite0, tmp_path, capsys):
    for c, name in PHOTOS.items():
        _save(getattr(data, name)(), tmp_path / f"{c}_{name}.png")
    _save(data.chelsea()[:, ::-1], tmp_path / "285_chelsea_flip.png")  # two prototypes of one class
    out = tmp_path / "out"
    assert main(["entangle", str(tmp_path), "--model", "efficientnet-lite0", "--top", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "entanglement.json").read_text())
    assert report["classes"] == [285, 657, 967] and report["names"] == ["Egyptian cat", "missile", "espresso"]
    assert report["layer"] == "_avg_pooling"
    P, cos = torch.tensor(report["probability"]), torch.tensor(report["feature_cosine"])
    assert torch.allclose(P.sum(1), torch.ones(3, dtype=P.dtype), atol=1e-6)
    assert (P.diagonal() > 0.5).all(), P

    # by hand: softmax over the three classes' logits, rows of one class averaged; cosine of mean features
    files = sorted(tmp_path.glob("*.png"))
    x = torch.stack([load_image(f) for f in files])
    feats = []
    handle = lite0.net._avg_pooling.register_forward_hook(lambda m, i, o: feats.append(o.flatten(1)))
    try:
        with torch.no_grad():
            logits = lite0(x)
    finally:
        handle.remove()
    labels = [int(f.name.split("_")[0]) for f in files]
    p = logits[:, [285, 657, 967]].softmax(1)
    rows = {c: p[[i for i, l in enumerate(labels) if l == c]].mean(0) for c in (285, 657, 967)}
    assert torch.allclose(P.float(), torch.stack([rows[c] for c in (285, 657, 967)]), atol=1e-4)
    mean = {c: feats[0][[i for i, l in enumerate(labels) if l == c]].mean(0) for c in (285, 657, 967)}
    assert cos[0, 2].item() == pytest.approx(torch.cosine_similarity(mean[285], mean[967], 0).item(), abs=1e-4)

    assert len(report["pairs"]) == 2 and report["pairs"][0]["score"] >= report["pairs"][1]["score"]
    assert f"{report['pairs'][0]['a']} " in printed
    with open(out / "entanglement.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["prototype", "Egyptian cat", "missile", "espresso"]
    assert float(table[3][3]) == pytest.approx(P[2, 2].item(), abs=1e-5)
    assert (out / "entanglement_features.csv").read_text().startswith("prototype,Egyptian cat,")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert Image.open(out / "entanglement.png").size[0] > 200


def test_entanglement_math_and_ranking():
    logits = torch.tensor([[5.0, 0.0, 0.0, 9.0], [2.0, 2.0, 0.0, 9.0], [0.0, 3.0, 3.0, 9.0], [0.0, 0.0, 4.0, 0.0]])
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    P, cos, kept = entanglement(logits, features, [0, 1, 1, 2])  # class 3 is not in the set: ignored
    assert kept == [0, 1, 2]
    assert torch.allclose(P.sum(1), torch.ones(3, dtype=P.dtype))
    assert torch.allclose(P[1], (logits[1, :3].softmax(0) + logits[2, :3].softmax(0)).double() / 2)
    assert cos[0, 1].item() == pytest.approx(1 / 2 ** 0.5) and cos[0, 2].item() == pytest.approx(1 / 2 ** 0.5)
    pairs = ranked_pairs(P, cos, kept, ["a", "b", "c"])
    assert [(p["a"], p["b"]) for p in pairs][0] == (1, 2)  # p(2|1) and p(1|2) are both large
    assert [p["score"] for p in pairs] == sorted((p["score"] for p in pairs), reverse=True)
    assert pairs[0]["score"] == pytest.approx((P[1, 2] + P[2, 1]).item() / 2)


def test_entangle_bad_input(tmp_path, capsys):
    def run(folder, *extra):
        code = main(["entangle", str(folder), "--model", "efficientnet-lite0", *extra])
        return code, capsys.readouterr().err

    assert run(tmp_path / "missing") == (2, f"fvis: error: not a folder: {tmp_path / 'missing'}\n")
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "empty" / "unnamed.png")
    code, err = run(tmp_path / "empty")
    assert code == 2 and err.startswith("fvis: warning: skipped 1 file(s) not named <class index>_<anything>")
    assert err.endswith("fvis: error: no images named <class index>_<anything> in " + str(tmp_path / "empty") + "\n")
    (tmp_path / "one").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "5000_x.png")
    code, err = run(tmp_path / "one")
    assert code == 2 and "class index 5000 out of range" in err
    (tmp_path / "one" / "5000_x.png").rename(tmp_path / "one" / "7_x.png")
    code, err = run(tmp_path / "one")
    assert code == 2 and "at least two classes" in err
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "8_x.png")
    code, err = run(tmp_path / "one", "--layer", "_blocks.99")
    assert code == 2 and "unknown layer '_blocks.99'" in err and err.count("\n") == 1


def test_heatmap_without_matplotlib_warns(monkeypatch, tmp_path):
    import sys

    from fvis.entangle import heatmap

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert heatmap([(torch.eye(2), "t")], ["a", "b"], tmp_path / "h.png") is None
    assert not (tmp_path / "h.png").exists()
