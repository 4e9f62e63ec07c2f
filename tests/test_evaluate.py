"""`fvis evaluate` agrees with a hand computation of the guide's definitions on fixed images."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

import fvis
from fvis.cli import main
from fvis.io import load_image
from fvis.metrics import heldout_transforms

ESPRESSO = 967


def _hfer_numpy(image: np.ndarray, cutoff: float = 0.25) -> float:
    """HFER written independently: luminance, Hann window, full 2-D power spectrum."""
    lum = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    h, w = lum.shape
    lum = (lum - lum.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(lum)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    return float(power[f > cutoff].sum() / power.sum())


def test_evaluate_matches_hand_computation(lite0, coffee, tmp_path, capsys):
    Image.fromarray((coffee.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "967_coffee.png")
    noise = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    Image.fromarray((noise.permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "11_noise.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "unnamed.png")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        code = main(["evaluate", str(tmp_path), "--model", "efficientnet-lite0", "--evaluators",
                     "efficientnet-lite1", "--transforms", "4", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 967_coffee.png | 967 | espresso |" in printed
    report = json.loads((tmp_path / "evaluation.json").read_text())
    rows = {r["image"]: r for r in report["rows"]}
    assert set(rows) == {"967_coffee.png", "11_noise.png"}

    x = load_image(tmp_path / "967_coffee.png")[None]
    lite1 = fvis.load("efficientnet-lite1")
    with torch.no_grad():
        clean_p = lite0(x).softmax(1)[0, ESPRESSO].item()
        held = [lite0(t[None]).argmax(1).item() == ESPRESSO for t in heldout_transforms(x, 4, seed=3)]
        transfer = float(lite1(F.resize(x, [240, 240], antialias=True)).argmax(1).item() == ESPRESSO)
    row = rows["967_coffee.png"]
    assert row["clean_p"] == pytest.approx(clean_p, abs=1e-5) and clean_p > 0.5
    assert row["robustness"] == pytest.approx(sum(held) / 4)
    assert row["transfer"] == transfer == 1.0
    assert row["hfer"] == pytest.approx(_hfer_numpy(x[0].permute(1, 2, 0).double().numpy()), rel=1e-3)
    assert row["hfer"] < 0.05 < rows["11_noise.png"]["hfer"]  # a photo vs white noise
    with open(tmp_path / "evaluation.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["image"] for r in table] == ["11_noise.png", "967_coffee.png"]
    assert table[1]["top1_efficientnet-lite1"] == "1"
    assert "**mean**" in (tmp_path / "evaluation.md").read_text()


def test_evaluate_rejects_bad_folders(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--model", "efficientnet-lite0"]) == 2
    assert "not a folder" in capsys.readouterr().err
    Image.new("RGB", (50, 50)).save(tmp_path / "5000_x.png")
    assert main(["evaluate", str(tmp_path), "--model", "efficientnet-lite0"]) == 2
    assert "out of range" in capsys.readouterr().err
