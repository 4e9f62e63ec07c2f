"""Feature spaces on the real EfficientNet-Lite0: folder activations and their cache, seeded
embeddings, maps, activation atlases (grid averages, rendered cells), class effects, bad input."""
import json

import pytest
import torch
from torchvision.transforms.v2 import functional as F

import fvis
import objectives
from fvis.cli import main
from fvis.features import atlas, cell_means, embed, folder_activations, grid_cells, save_atlas
from fvis.features.atlas import direction_logit_effects, directions_objective, render_directions
from fvis.features.maps import feature_map, name_label, save_map
from fvis.files import save_image
from fvis.hooks import Capture

LAYER = "_blocks.10"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four offline photos (scikit-image) as small PNGs, plus one unreadable file."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "rocket", "astronaut"):
        im = torch.from_numpy(getattr(data, name)().copy())[..., :3].permute(2, 0, 1).float() / 255
        save_image(F.resize(im, [160], antialias=True), folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.filterwarnings("ignore:fvis. skipping unreadable")
def test_cached_activations_equal_a_fresh_forward(lite0, photos, tmp_path):
    with pytest.warns(UserWarning, match="broken.jpg"):
        first = folder_activations(lite0, photos, LAYER, pool="spatial", views=3, positions=5, cache=tmp_path)
    again = folder_activations(lite0, photos, LAYER, pool="spatial", views=3, positions=5, cache=tmp_path)
    assert not first.cached and again.cached
    assert first.files == again.files == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    assert len(first.skipped) == 1 and first.skipped[0].startswith("broken.jpg")
    assert torch.equal(first.values, again.values) and torch.equal(first.position, again.position)
    assert first.values.shape == (4 * 3 * 5, 112) and first.grid == (14, 14)
    # a fresh forward of the same views gives the same vectors at the recorded positions
    from fvis.features import view_images
    rows = torch.arange(len(first.values))
    x = torch.stack(view_images(photos, first, tuple(lite0.input_size), rows[::5]))
    with Capture(lite0, [LAYER]) as cap:
        maps = cap.forward(x)[LAYER]
    fresh = maps[rows // 5, :, first.position[:, 0], first.position[:, 1]]
    torch.testing.assert_close(fresh, first.values, rtol=1e-4, atol=1e-4)
    pooled = folder_activations(lite0, photos, LAYER, pool="mean", views=3, cache=False)
    torch.testing.assert_close(pooled.values, maps.mean((2, 3)), rtol=1e-4, atol=1e-4)
    assert first.view.tolist()[:15] == [0] * 5 + [1] * 5 + [2] * 5


def test_embedding_is_deterministic_for_a_seed():
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    for method in ("pca", "tsne"):
        a, b = embed(x, method, seed=3), embed(x, method, seed=3)
        assert torch.equal(a, b) and a.shape == (40, 2) and a.min() >= 0 and a.max() <= 1
    with pytest.raises(fvis.FvisError, match="at least 3"):
        embed(x[:2], "tsne")


def test_umap_embedding_is_deterministic_for_a_seed():
    pytest.importorskip("umap", reason="umap-learn is not installed (pip install 'fvis[umap]')")
    x = torch.randn(60, 16, generator=torch.Generator().manual_seed(1))
    a, b, c = embed(x, "umap", seed=3), embed(x, "umap", seed=3), embed(x, "umap", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (60, 2) and a.min() >= 0 and a.max() <= 1


def test_grid_averages_exactly_the_activations_in_each_cell():
    g = torch.Generator().manual_seed(0)
    xy, values = torch.rand(200, 2, generator=g), torch.randn(200, 7, generator=g)
    xy[0] = torch.tensor([1.0, 1.0])  # the far edge belongs to the last cell
    cells = grid_cells(xy, 4)
    means, counts = cell_means(values, cells, 4)
    for c in range(16):
        r, q = divmod(c, 4)
        inside = (xy[:, 0] >= q / 4) & ((xy[:, 0] < (q + 1) / 4) | (q == 3)) & \
                 (xy[:, 1] >= r / 4) & ((xy[:, 1] < (r + 1) / 4) | (r == 3))
        assert counts[c] == inside.sum()
        if inside.any():
            torch.testing.assert_close(means[c], values[inside].mean(0))
    assert cells[0] == 15 and counts.sum() == 200


def test_class_effects_match_finite_differences(lite0, coffee):
    v = torch.randn(2, 112, generator=torch.Generator().manual_seed(0))
    base = coffee[None]
    effects = direction_logit_effects(lite0, LAYER, v, base)
    module = dict(lite0.net.named_modules())[LAYER]
    eps, diffs = 1e-2, []
    for k in range(2):
        handle = module.register_forward_hook(lambda m, i, o, k=k: o + eps * v[k][None, :, None, None])
        with torch.no_grad():
            plus = lite0(base)
        handle.remove()
        with torch.no_grad():
            diffs.append((plus - lite0(base))[0] / eps)
    torch.testing.assert_close(effects, torch.stack(diffs), rtol=0.05, atol=0.05)


@pytest.mark.filterwarnings("ignore:fvis. skipping unreadable")
def test_atlas_cells_and_their_renders(lite0, photos, tmp_path):
    result = atlas(lite0, photos, LAYER, grid=3, min_count=4, steps=40, size=64, views=2, positions=6,
                   method="pca", bases=1, batch_size=8, cache=tmp_path)
    cells = grid_cells(result.xy, 3)
    for cell, d in zip(result.cells, result.directions):  # each cell: the mean of exactly its activations
        inside = cells == cell["cell"]
        assert cell["count"] == int(inside.sum()) >= 4
        torch.testing.assert_close(d, result.acts.values[inside].mean(0), rtol=1e-5, atol=1e-5)
        assert sum(cell["files"].values()) == cell["count"] and len(cell["classes"]) == 5
    assert len(result.cells) == int((result.counts >= 4).sum()) >= 3
    # each rendered image raises its own direction more than the other cells' images do
    with Capture(lite0, [LAYER]) as cap:
        a = cap.forward(result.images)[LAYER]
    scores = torch.einsum("bchw,kc->bk", a, result.directions) / a[0, 0].numel()  # image b, direction k
    assert (scores.argmax(0) == torch.arange(len(scores))).all(), scores
    paths = save_atlas(result, tmp_path / "out", lite0)
    data = json.loads((tmp_path / "out" / "cells.json").read_text())
    assert len(data["cells"]) == len(result.cells) and all(p.is_file() for p in paths)
    # a class atlas keeps exactly the cells whose direction raises that class most (class_top=1)
    c = result.cells[0]["classes"][0]["class"]
    only = atlas(lite0, photos, LAYER, grid=3, min_count=4, steps=1, size=32, views=2, positions=6,
                 method="pca", bases=1, batch_size=8, cache=tmp_path, cls=c, class_top=1)
    assert only.acts.cached
    assert [x["cell"] for x in only.cells] == [x["cell"] for x in result.cells if x["classes"][0]["class"] == c]


def test_directions_objective_and_chunked_render(lite0, coffee):
    """Item i of the batched objective is direction i alone; chunks by batch size cover every direction."""
    v = torch.randn(3, 112, generator=torch.Generator().manual_seed(2))
    x = coffee[None].expand(3, -1, -1, -1)
    with Capture(lite0, [LAYER]) as cap:
        acts = cap.forward(x)
    for cossim in (0.0, 2.0):
        batched = directions_objective(LAYER, v, cossim)(acts)
        alone = torch.stack([objectives.direction(LAYER, v[i], cossim)(acts)[i] for i in range(3)])
        torch.testing.assert_close(batched, alone)
    images, values, _ = render_directions(lite0, LAYER, v, size=32, steps=2, batch_size=2)
    assert images.shape == (3, 3, 32, 32) and values.shape == (3,)


@pytest.mark.filterwarnings("ignore:fvis. skipping unreadable")
def test_map_files_and_labels(lite0, photos, tmp_path):
    fmap = feature_map(lite0, photos, "_blocks.15", method="pca", views=2, labels="top1", cache=False)
    assert len(fmap.xy) == 8 and fmap.top1[fmap.acts.files.index("coffee.png") * 2] == "espresso"
    save_map(fmap, photos, tmp_path, lite0)
    rows = (tmp_path / "map.csv").read_text().splitlines()
    assert rows[0] == "file,view,x,y,label,top1,top1_name" and len(rows) == 9
    assert json.loads((tmp_path / "map.json").read_text())["layer"] == "_blocks.15"
    assert name_label("285_cat.png", lite0.class_names) == "Egyptian cat" and name_label("coffee_2.png") == "coffee"


@pytest.mark.parametrize("command,args,message", [
    ("map", ["--layer", "_blocks.15", "--images", "EMPTY"], "no image files"),
    ("map", ["--layer", "_blocks.99", "--images", "PHOTOS"], "unknown layer '_blocks.99'. Did you mean"),
    ("atlas", ["--layer", "_fc", "--images", "PHOTOS"], "layer '_fc' has no spatial output"),
    ("atlas", ["--layer", LAYER, "--images", "PHOTOS", "--class", "espreso"], "unknown class name"),
])
def test_bad_input_one_line_exit_2(lite0, photos, tmp_path, monkeypatch, capsys, command, args, message):
    monkeypatch.setattr("fvis.commands._args.load_model", lambda a: lite0)
    (tmp_path / "empty").mkdir()
    args = [{"EMPTY": str(tmp_path / "empty"), "PHOTOS": str(photos)}.get(a, a) for a in args]
    assert main([command, "--model", "efficientnet-lite0", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fvis: error: ") and message in err[0], err


@pytest.mark.filterwarnings("ignore:fvis. skipping unreadable")
def test_cli_map_and_atlas_write_their_files(lite0, photos, tmp_path, monkeypatch, capsys):
    for command in ("map", "atlas"):
        monkeypatch.setattr("fvis.commands._args.load_model", lambda a: lite0)
    base = ["--model", "efficientnet-lite0", "--images", str(photos), "--method", "pca", "--quiet", "--no-cache"]
    assert main(["map", *base, "--layer", "_blocks.15", "--out", str(tmp_path / "m")]) == 0
    assert main(["atlas", *base, "--layer", LAYER, "--grid", "2", "--views", "1", "--positions", "4", "--steps", "2",
                 "--size", "32", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    assert "skipped 1 unreadable (broken.jpg)" in out.out and "fvis: warning: skipping unreadable" in out.err
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"map.csv", "map.json", "map.png"}
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"atlas.png", "density.png", "cells.json"}
