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
from fvis.files import load_image
from fvis.metrics import heldout_transforms, unseen_transforms

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
    code = main(["evaluate", str(tmp_path), "--model", "efficientnet-lite0", "--evaluators",
                 "efficientnet-lite1", "--transforms", "4", "--seed", "3"])
    assert code == 0
    printed, err = capsys.readouterr()
    assert err.startswith("fvis: warning: ") and "skipped 1 file" in err and err.count("\n") == 1  # one line
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
        x1 = F.resize(x, [240, 240], antialias=True)
        unseen = (lite1(unseen_transforms(x1, 4, seed=3)).argmax(1) == ESPRESSO).float().mean().item()
    row = rows["967_coffee.png"]
    assert row["transfer_unseen"] == pytest.approx(unseen)
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


def test_evaluate_skips_an_unreadable_image_like_every_folder_command(tmp_path, capsys):
    """One rule for folders (fvis.datasets): skipped, counted, one warning line; the run goes on."""
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "1_red.png")
    (tmp_path / "2_broken.png").write_bytes(b"not a png")
    assert main(["evaluate", str(tmp_path), "--model", "efficientnet-lite0", "--evaluators", "",
                 "--transforms", "2"]) == 0
    printed, err = capsys.readouterr()
    assert err.startswith("fvis: warning: skipping unreadable image") and "2_broken.png" in err
    assert err.count("\n") == 1 and "Skipped 1 unreadable file(s): 2_broken.png." in printed
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["image"] for r in report["rows"]] == ["1_red.png"]
    assert [s["image"] for s in report["skipped"]] == ["2_broken.png"]
    (tmp_path / "1_red.png").write_bytes(b"not a png either")
    assert main(["evaluate", str(tmp_path), "--model", "efficientnet-lite0", "--evaluators", ""]) == 2
    assert "no readable images among 2 file(s)" in capsys.readouterr().err


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    try:
        from scipy.stats import spearmanr
    except ImportError:  # numpy ranks (no ties in pooled block outputs)
        ra, rb = a.argsort().argsort(), b.argsort().argsort()
        return float(np.corrcoef(ra, rb)[0, 1])
    return float(spearmanr(a, b).statistic)


def _blocks_pooled(model, x: torch.Tensor) -> list[np.ndarray]:
    """Spatial mean of every `_blocks.N` output, (B, C_l) per block, with plain forward hooks."""
    out = []
    handles = [b.register_forward_hook(lambda m, i, o: out.append(o.mean((2, 3)).double().numpy()))
               for b in model.net._blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_path_similarity_photo_beats_noise_and_matches_spearman(lite0, tmp_path):
    from skimage import data

    ref, folder = tmp_path / "ref", tmp_path / "eval"
    ref.mkdir(), folder.mkdir()
    for c, photo in ((967, data.coffee()), (285, data.chelsea())):
        w = photo.shape[1]
        Image.fromarray(np.ascontiguousarray(photo[:, : w * 3 // 4])).save(ref / f"{c}_left.png")
        Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(ref / f"{c}_flip.png")
    right = torch.from_numpy(data.coffee()[:, 150:]).permute(2, 0, 1).float() / 255  # a crop not in ref
    right = F.center_crop(F.resize(right, [224], antialias=True), [224, 224])
    Image.fromarray((right.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / "967_right.png")
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "967_noise.png")

    assert main(["evaluate", str(folder), "--model", "efficientnet-lite0", "--transforms", "0",
                 "--reference", str(ref)]) == 0
    report = json.loads((folder / "evaluation.json").read_text())
    rows = {r["image"]: r for r in report["rows"]}
    photo, fake = rows["967_right.png"], rows["967_noise.png"]
    assert photo["path_similarity"] > 0.5 > 0 > fake["path_similarity"]
    assert photo["path_similarity_raw"] > fake["path_similarity_raw"]
    assert report["reference"]["layers"] == [f"_blocks.{i}" for i in range(16)]

    # by hand: per-block Spearman against the class mean of the natural images, averaged over blocks
    names = sorted(p.name for p in ref.iterdir())
    pooled = _blocks_pooled(lite0, torch.stack([load_image(ref / n, 224) for n in names]))
    refs = {n: [a[i:i + 1] for a in pooled] for i, n in enumerate(names)}
    coffee = [np.mean([refs["967_left.png"][l][0], refs["967_flip.png"][l][0]], 0) for l in range(16)]
    x = _blocks_pooled(lite0, load_image(folder / "967_right.png")[None])
    raw = np.mean([_spearman(x[l][0], coffee[l]) for l in range(16)])
    assert photo["path_similarity_raw"] == pytest.approx(raw, abs=1e-6)
    # s_same: each coffee image against the other one (leave-one-out); s_other: the cats against coffee's mean
    same = np.mean([_spearman(refs["967_left.png"][l][0], refs["967_flip.png"][l][0]) for l in range(16)])
    other = np.mean([_spearman(refs[f"285_{k}.png"][l][0], coffee[l]) for k in ("left", "flip") for l in range(16)])
    assert report["reference"]["same"]["967"] == pytest.approx(same, abs=1e-6)
    assert report["reference"]["other"]["967"] == pytest.approx(other, abs=1e-6)
    assert photo["path_similarity"] == pytest.approx((raw - other) / (same - other), abs=1e-5)
    with open(folder / "evaluation.csv") as f:
        header = next(csv.reader(f))
    assert header[header.index("path_similarity") + 1] == "path_similarity_raw"
    assert {"transfer_heldout", "natural_in_range"} <= set(header)
    assert "| path_similarity | path_similarity_raw |" in (folder / "evaluation.md").read_text()


def test_path_similarity_single_reference_image_and_missing_class(lite0, tmp_path):
    from fvis.evaluate import path_reference

    for c in (1, 2):
        Image.new("RGB", (64, 64), (40 * c, 90, 200)).save(tmp_path / f"{c}_x.png")
    ref = path_reference(lite0, tmp_path)
    assert ref.same == {1: None, 2: None} and ref.other[1] is not None
    rows = ref.score([torch.zeros(1, a.shape[0]).add_(torch.arange(a.shape[0])) for a in ref.means[1]], [1])
    assert rows[0]["path_similarity"] is None and rows[0]["path_similarity_raw"] is not None
    assert ref.score([m[None] for m in ref.means[1]], [3]) == [{"path_similarity": None, "path_similarity_raw": None}]


def test_unseen_transforms_are_seeded_in_range_and_not_the_heldout_family(coffee):
    x = coffee[None]
    a, b = unseen_transforms(x, 6, seed=1), unseen_transforms(x, 6, seed=1)
    assert a.shape == (6, 3, 224, 224) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, unseen_transforms(x, 6, seed=2))
    assert (a - x).abs().flatten(1).mean(1).min() > 0.005  # every copy changed
    # colour, resolution, compression and noise: no geometry, so each copy still lines up with the photo,
    # unlike the held-out family's shifted and rotated copies
    same_place = lambda t: torch.stack([torch.corrcoef(torch.stack([c.flatten(), x[0].flatten()]))[0, 1] for c in t])  # noqa: E731
    assert same_place(a).min() > 0.9 > same_place(heldout_transforms(x, 6, seed=1)).min()
