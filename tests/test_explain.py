"""Attribution methods, feature isolation and inspection on real Lite0, with literature sanity checks:
IG completeness, model randomization (Adebayo et al. 2018), Grad-CAM mass on the object,
occlusion/mask agreement; exactness on a linear toy model; bad input; the model left as found."""
import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn
from PIL import Image
from torch import nn

import fvis
import objectives as obj
from fvis import explain as E
from fvis.cli import main
from fvis.errors import FvisError
from fvis.inspection import activation_maps, filter_view, first_conv, top_k
import fvis.baselines
from fvis.isolate import isolate, shared_features

CUP_BOX = (0, 145, 28, 192)  # rows, columns of the espresso cup in the 224x224 centre crop of skimage's coffee


def spearman(a: torch.Tensor, b: torch.Tensor, pool: int = 1) -> float:
    """Rank correlation of two maps, optionally average-pooled first (pixel noise averaged out)."""
    if pool > 1:
        a, b = Fn.avg_pool2d(a[None, None], pool), Fn.avg_pool2d(b[None, None], pool)
    ra, rb = a.flatten().argsort().argsort().float(), b.flatten().argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def box_mass(heat: torch.Tensor, box) -> tuple[float, float]:
    """Share of the map's mass inside ``box`` and the box's share of the area."""
    y0, y1, x0, x1 = box
    return float(heat[y0:y1, x0:x1].sum() / heat.sum()), (y1 - y0) * (x1 - x0) / heat.numel()


def model_state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], hooks)


@pytest.fixture(scope="module")
def lite0():
    """A freshly loaded Lite0 for this module: the sanity thresholds below are for the pretrained
    weights, and a shared session model can carry BatchNorm statistics updated by another module's
    train-mode forward."""
    torch.set_num_threads(2)
    return fvis.load("efficientnet-lite0")


@pytest.fixture(scope="module")
def espresso_ig(lite0, coffee):
    return E.integrated_gradients(lite0, coffee, steps=64, progress=False)


# --------------------------------------------------------------------------- sanity checks (literature)
def test_ig_completeness_gap_below_one_percent(lite0, coffee, espresso_ig):
    a = espresso_ig
    assert a.target.tolist() == [967]  # espresso
    delta = a.score - a.info["baseline_score"]
    assert torch.allclose(a.info["attribution_sum"], a.raw.double().sum((1, 2, 3)).float(), rtol=1e-5)
    assert torch.allclose(a.info["completeness_gap"], a.info["attribution_sum"] - delta, atol=1e-5)
    assert float(a.info["relative_gap"][0]) < 0.01
    with pytest.warns(UserWarning, match="completeness gap is .* use more steps"):  # the check can fail:
        coarse = E.integrated_gradients(lite0, coffee, steps=8, progress=False)  # too few steps
    assert float(coarse.info["relative_gap"][0]) > 0.05


def test_model_randomization_check(lite0, coffee):
    """Attributions of a randomly re-initialized Lite0 correlate weakly with the trained model's,
    while a slightly noisy copy of the input gives nearly the same map (so the measure can see agreement)."""
    randomized = copy.deepcopy(lite0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for m in randomized.modules():
            if m is not randomized and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    noisy = (coffee + 0.02 * torch.randn(coffee.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for method, pool, same, weak in (("gradcam", 1, 0.9, 0.6), ("saliency", 8, 0.55, 0.45)):
        trained = E.explain(lite0, coffee, method, progress=False)
        again = E.explain(lite0, noisy, method, trained.target.tolist(), progress=False)
        rand = E.explain(randomized, coffee, method, trained.target.tolist(), progress=False)
        rho_same = spearman(trained.heatmap[0], again.heatmap[0], pool)
        rho_rand = spearman(trained.heatmap[0], rand.heatmap[0], pool)
        assert rho_same > same, (method, rho_same)
        assert rho_rand < weak and rho_rand < rho_same - 0.2, (method, rho_rand, rho_same)


def test_gradcam_mass_lies_on_the_object(lite0, coffee):
    cam = E.gradcam(lite0, coffee, progress=False)
    assert cam.settings["layer"] == "_conv_head"
    assert cam.raw.shape == (1, 1, 224, 224) and cam.info["cam"].shape == (1, 1, 7, 7)
    mass, area = box_mass(cam.raw[0, 0], CUP_BOX)
    assert mass > 0.6 and mass > 1.2 * area, (mass, area)


def test_gradcam_on_china_photo_when_sklearn_is_installed(lite0):
    datasets = pytest.importorskip("sklearn.datasets")
    from torchvision.transforms.v2 import functional as F

    img = torch.from_numpy(datasets.load_sample_image("china.jpg").copy()).permute(2, 0, 1).float() / 255
    img = F.resize(img, [224], antialias=True)  # 224 x 335: the temple fills the left half
    cam = E.gradcam(lite0, img, progress=False)
    mass, area = box_mass(cam.raw[0, 0], (0, 224, 0, 170))
    assert mass > 0.6 and mass > 1.2 * area, (mass, area)


def test_gradcam_is_invariant_to_a_following_1x1_conv(lite0, coffee):
    """_conv_head is a linear 1x1 conv of _blocks.15: Grad-CAM maps (before the ReLU) are equal,
    which holds only if activations and gradients are taken at the right tensors."""
    a = E.gradcam(lite0, coffee, layer="_blocks.15", progress=False)
    b = E.gradcam(lite0, coffee, layer="_conv_head", progress=False)
    assert torch.allclose(a.info["cam"], b.info["cam"], rtol=1e-3, atol=1e-4 * float(a.info["cam"].max()))


def test_occlusion_and_mask_agree_on_the_important_region(lite0, coffee):
    occ = E.occlusion(lite0, coffee, patch=48, stride=24, baseline="blur", progress=False)
    iso = isolate(lite0, coffee, "espresso", steps=50, progress=False)
    assert float(iso.kept[0]) > 0.8 and float(iso.area[0]) < 0.6, (iso.kept, iso.area)

    def top(h, share=0.2):
        return h >= h.flatten().quantile(1 - share)

    a, b = top(occ.raw[0, 0]), top(iso.mask[0, 0])
    iou = float((a & b).sum() / (a | b).sum())
    chance = 0.2 * 0.2 / (0.2 + 0.2 - 0.2 * 0.2)  # expected IoU of two independent 20% regions
    assert iou > 2 * chance, iou


def test_shared_features_of_two_classes(lite0, coffee):
    small = Fn.interpolate(coffee[None], size=112, mode="bilinear", antialias=True)[0]
    iso, shared = shared_features(lite0, small, ["espresso", "cup"], steps=10, progress=False)
    assert iso.target.tolist() == [967, 968] and iso.mask.shape == (2, 1, 112, 112)
    assert torch.equal(shared, iso.mask.amin(0)) and shared.shape == (1, 112, 112)
    assert iso.result.history["objective"].shape == (10, 2) and "mask_area" in iso.result.history
    assert (iso.area < 0.9).all()  # the masks shrink from their start at 0.9
    masked = iso.masked
    assert torch.allclose(masked, iso.mask * small + (1 - iso.mask) * fvis.baselines.blur(small[None]), atol=1e-5)


# --------------------------------------------------------------------------- exactness on a linear model
@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 10, 3))
    return fvis.wrap(lin, mean=None, std=None, input_size=(12, 10)), fvis.wrap(net, mean=None, std=None, input_size=12)


def test_linear_model_gradients_ig_and_occlusion_are_exact(linear):
    model, _ = linear
    w = model.net[1].weight.detach().view(3, 3, 12, 10)
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    sal = E.saliency(model, x, [1, 2], progress=False)
    assert torch.allclose(sal.raw, w[[1, 2]], atol=1e-6)
    ig = E.integrated_gradients(model, x, [1, 2], steps=3, baseline="gray", batch_size=4, progress=False)
    assert torch.allclose(ig.raw, (x - 0.5) * w[[1, 2]], atol=1e-6)
    assert ig.info["relative_gap"].max() < 1e-4
    gxi = E.gradient_x_input(model, x, [1, 2], progress=False)
    assert torch.allclose(gxi.raw, x * w[[1, 2]], atol=1e-6)
    occ = E.occlusion(model, x, [1, 2], patch=(4, 3), stride=(4, 3), baseline=0.0, batch_size=5, progress=False)
    # windows tile the image (plus a last column of windows aligned to the right edge: columns 7..9)
    drop = x * w[[1, 2]]
    y, c = 4, 3  # a pixel covered by one window only: rows 4..7, columns 3..5
    assert torch.allclose(occ.raw[:, 0, y, c], drop[:, :, 4:8, 3:6].sum((1, 2, 3)), atol=1e-5)
    assert occ.info["grid"].shape == (2, 3, 4)


@pytest.mark.filterwarnings("ignore:.*completeness gap")
def test_batching_does_not_change_results(linear):
    _, model = linear
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    for method, kw in (("ig", {"steps": 5}), ("smoothgrad", {"samples": 4}), ("occlusion", {"patch": 4, "stride": 2})):
        a = E.explain(model, x, method, 1, batch_size=2, progress=False, **kw)
        b = E.explain(model, x, method, 1, batch_size=64, progress=False, **kw)
        assert torch.allclose(a.raw, b.raw, atol=1e-5), method


@pytest.mark.filterwarnings("ignore:.*completeness gap")
def test_attribute_an_objective_instead_of_a_class(lite0, coffee):
    o = obj.channel("_blocks.8", 33)
    a = E.saliency(lite0, coffee, o, progress=False)
    b = E.integrated_gradients(lite0, coffee, o, steps=4, progress=False)
    assert a.target.tolist() == [-1] and torch.isfinite(a.raw).all() and a.raw.abs().sum() > 0
    assert "probability" not in a.info and torch.allclose(a.score, b.score)


# --------------------------------------------------------------------------- the model is left as found
def test_guided_gradcam_leaves_the_model_unchanged(lite0, coffee):
    lite0.net._blocks[3].train()
    lite0.net._fc.weight.requires_grad_(True)
    before = model_state(lite0)
    try:
        plain = E.saliency(lite0, coffee, 967, progress=False).raw
        guided = E.guided_gradcam(lite0, coffee, 967, progress=False)
        assert guided.info["relu_modules"] == 17 and guided.raw.shape == (1, 3, 224, 224)
        assert model_state(lite0) == before
        assert torch.equal(E.saliency(lite0, coffee, 967, progress=False).raw, plain)  # no guided hooks left
        gb = E.guided_backprop(lite0, coffee, 967, progress=False).raw
        assert not torch.allclose(gb, plain)
        with pytest.raises(FvisError, match="class index 5000 out of range"):
            E.guided_gradcam(lite0, coffee, 5000, progress=False)
        assert model_state(lite0) == before
    finally:
        lite0.net._blocks[3].eval()
        lite0.net._fc.weight.requires_grad_(False)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    ({"layer": "_fc"}, "Grad-CAM needs a layer with spatial output (B, C, H, W); layer '_fc' gives (1, 1000)"),
    ({"layer": "_avg_pooling"}, "layer '_avg_pooling' gives (1, 1280, 1, 1). Try a conv layer such as _conv_head"),
    ({"layer": "_conv_heda"}, "unknown layer '_conv_heda'. Did you mean: _conv_head"),
    ({"layer": "output"}, "not the model output"),
])
def test_gradcam_bad_layer(lite0, coffee, kwargs, message):
    with pytest.raises(FvisError) as e:
        E.gradcam(lite0, coffee, progress=False, **kwargs)
    assert message in str(e.value)


def test_bad_arguments(lite0, coffee):
    with pytest.raises(FvisError, match="unknown method 'gradcm'. Did you mean: gradcam"):
        E.explain(lite0, coffee, "gradcm")
    with pytest.raises(FvisError, match="unknown class name 'espreso'. Did you mean: espresso"):
        E.saliency(lite0, coffee, "espreso", progress=False)
    with pytest.raises(FvisError, match="the model takes 3-channel images, got 1"):
        E.saliency(lite0, coffee[:1], progress=False)
    with pytest.raises(FvisError, match="'mean' baseline needs a folder"):
        E.integrated_gradients(lite0, coffee, baseline="mean", progress=False)
    with pytest.raises(FvisError, match="unknown baseline 'zeros'"):
        E.integrated_gradients(lite0, coffee, baseline="zeros", progress=False)
    with pytest.raises(FvisError, match="occlusion patch 300 is larger than the image"):
        E.occlusion(lite0, coffee, patch=300, progress=False)
    with pytest.raises(FvisError, match="2 targets for a batch of 1"):
        E.saliency(lite0, coffee, [1, 2], progress=False)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, coffee):
    """Four photos and one unreadable .jpg (plus a .txt that is not an image)."""
    from skimage import data

    from fvis.files import save_image

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "rocket"):
        save_image(torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255, folder / f"{name}.png")
    save_image(coffee, folder / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --------------------------------------------------------------------------- inspection
def test_topk_skips_unreadable_files_and_ranks_by_activation(lite0, photo_folder):
    with pytest.warns(UserWarning, match="skipping unreadable image.*broken.jpg"):
        result = top_k(lite0, photo_folder, "_blocks.8", 33, k=3, batch_size=3, progress=False)
    assert result.read == 4 and [p.name for p, _ in result.skipped] == ["broken.jpg"]
    assert len(result.entries) == 3
    scores = [e["score"] for e in result.entries]
    assert scores == sorted(scores, reverse=True)
    # the ranking is that of the channel objective the renderer maximizes, image by image
    from fvis.hooks import Capture, frozen
    from fvis.files import load_image

    direct = {}
    with frozen(lite0), torch.no_grad(), Capture(lite0, ["_blocks.8"]) as cap:
        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            x = load_image(photo_folder / f"{name}.png", 224)[None]
            direct[name] = float(obj.channel("_blocks.8", 33)(cap.plan(x)))
    expected = sorted(direct, key=direct.get, reverse=True)[:3]
    assert [e["path"].stem for e in result.entries] == expected
    assert np.allclose(scores, [direct[n] for n in expected], rtol=1e-4, atol=1e-5)
    assert result.entries[0]["heatmap"].shape == (14, 14)
    with pytest.raises(FvisError, match="channel 999 out of range"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top_k(lite0, photo_folder, "_blocks.8", 999, progress=False)


def test_filter_views_and_activation_maps(lite0, coffee):
    assert first_conv(lite0) == "_conv_stem"
    rgb = filter_view(lite0)
    assert rgb.kind == "rgb" and rgb.shape == (32, 3, 3, 3) and rgb.image.shape[0] == 3
    assert 0 <= rgb.image.min() and rgb.image.max() <= 1
    dw = filter_view(lite0, "_blocks.3._depthwise_conv")
    assert dw.kind == "kernels" and dw.shape[1] == 1
    mat = filter_view(lite0, "_conv_head")
    assert mat.kind == "matrix" and mat.shape == (1280, 320)
    with pytest.raises(FvisError, match="no convolution or linear weight"):
        filter_view(lite0, "_bn0")
    maps = activation_maps(lite0, coffee, "_blocks.2", top=5)
    assert maps.maps.shape == (5, 56, 56)
    assert torch.equal(maps.channels, maps.all_means.topk(5).indices)
    with pytest.raises(FvisError, match="activation maps need a layer with spatial output"):
        activation_maps(lite0, coffee, "_fc")


def test_mean_baseline_reads_a_folder_and_skips_unreadable(lite0, coffee, photo_folder):
    from fvis.baselines import dataset_mean

    with pytest.warns(UserWarning, match="broken.jpg"):
        mean = dataset_mean(photo_folder, 224)
    assert mean.shape == (3, 224, 224) and 0 < float(mean.mean()) < 1


# --------------------------------------------------------------------------- command line
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explain_writes_raw_heatmap_overlay_json_and_sheet(tmp_path, capsys, photo_folder):
    out = tmp_path / "ex"
    code, stdout, err = run(capsys, "explain", "--model", "efficientnet-lite0", "--image", photo_folder / "coffee.png",
                            "-m", "saliency,gradcam", "-m", "ig", "--steps", "4", "--quiet", "--out", out)
    assert code == 0, err
    for m in ("saliency", "gradcam", "ig"):
        raw = np.load(out / f"{m}.npy")
        assert raw.shape == ((1, 224, 224) if m == "gradcam" else (3, 224, 224)) and raw.dtype == np.float32
        assert Image.open(out / f"{m}_heatmap.png").size == (224, 224)
        assert Image.open(out / f"{m}_overlay.png").size == (224, 224)
        meta = json.loads((out / f"{m}.json").read_text())
        assert meta["class"] == 967 and meta["class_name"] == "espresso" and meta["method"] == m
        assert meta["probability"] > 0.5 and meta["raw"]["file"] == f"{m}.npy"
    ig = json.loads((out / "ig.json").read_text())
    assert ig["settings"]["steps"] == 4 and "completeness_gap" in ig["info"] and "relative_gap" in ig["info"]
    assert json.loads((out / "gradcam.json").read_text())["settings"]["layer"] == "_conv_head"
    assert Image.open(out / "comparison.png").size[0] > 4 * 224
    assert "completeness gap" in stdout and "espresso" in stdout


def test_cli_explain_safetensors_and_class(tmp_path, capsys, photo_folder):
    from safetensors.torch import load_file

    code, _, err = run(capsys, "explain", "--model", "efficientnet-lite0", "--image", photo_folder / "coffee.png",
                       "-m", "occlusion", "--patch", "112", "--stride", "112", "--class", "cup",
                       "--format", "safetensors", "--quiet", "--out", tmp_path)
    assert code == 0, err
    data = load_file(tmp_path / "occlusion.safetensors")
    assert data["attribution"].shape == (1, 224, 224) and data["heatmap"].shape == (224, 224)
    assert json.loads((tmp_path / "occlusion.json").read_text())["class"] == 968


def test_cli_mask_for_two_classes_writes_each_mask_and_the_shared_part(tmp_path, capsys, photo_folder):
    code, out, err = run(capsys, "explain", "--model", "efficientnet-lite0", "--image", photo_folder / "coffee.png",
                         "-m", "mask,gradcam", "--class", "espresso", "--class", "968", "--mask-steps", "3",
                         "--quiet", "--out", tmp_path)
    assert code == 0, err
    for stem in ("mask_espresso", "mask_cup", "gradcam_espresso", "gradcam_cup"):
        assert (tmp_path / f"{stem}.npy").exists() and (tmp_path / f"{stem}_overlay.png").exists()
    masks = [np.load(tmp_path / f"mask_{c}.npy") for c in ("espresso", "cup")]
    assert np.array_equal(np.load(tmp_path / "mask_shared.npy"), np.minimum(*masks))
    meta = json.loads((tmp_path / "mask_cup.json").read_text())
    assert meta["class"] == 968 and meta["settings"]["steps"] == 3 and 0 < meta["info"]["area"] <= 1
    assert "kept" in out and (tmp_path / "comparison.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["-m", "gradcam", "--layer", "_fc"], "Grad-CAM needs a layer with spatial output"),
    (["-m", "saliency,gradcm"], "unknown method 'gradcm'. Did you mean: gradcam"),
    (["-m", "ig", "--baseline", "mean"], "'mean' baseline needs a folder"),
    (["-m", "ig", "--class", "espreso"], "unknown class name 'espreso'"),
    (["-m", "saliency", "--image", "MISSING"], "image not found"),
    (["-m", "saliency", "--image", "BROKEN"], "cannot read image"),
])
def test_cli_explain_bad_input_is_one_line(tmp_path, capsys, photo_folder, argv, message):
    image = {"MISSING": photo_folder / "nope.png", "BROKEN": photo_folder / "broken.jpg"}
    argv = [str(image.get(a, a)) for a in argv]
    if "--image" not in argv:
        argv += ["--image", str(photo_folder / "coffee.png")]
    code, _, err = run(capsys, "explain", "--model", "efficientnet-lite0", *argv, "--quiet", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and err.startswith("fvis: error: ") and message in err, err


def test_cli_topk_and_filters(tmp_path, capsys, photo_folder):
    code, out, err = run(capsys, "topk", "--model", "efficientnet-lite0", "--layer", "_blocks.4", "--channel", "7",
                         "--images", photo_folder, "-k", "2", "--quiet", "--out", tmp_path / "top")
    assert code == 0, err
    assert err.startswith("fvis: warning: skipping unreadable image") and "broken.jpg" in err and err.count("\n") == 1
    assert "skipped 1 unreadable file(s)" in out and "top 2 of 4 images" in out
    meta = json.loads((tmp_path / "top" / "topk.json").read_text())
    assert len(meta["top"]) == 2 and meta["read"] == 4 and meta["skipped"][0]["path"].endswith("broken.jpg")
    assert (tmp_path / "top" / "topk.png").exists() and (tmp_path / "top" / "topk_heatmaps.png").exists()
    code, out, err = run(capsys, "filters", "efficientnet-lite0", "--image", photo_folder / "coffee.png", "--top", "4",
                         "--out", tmp_path / "f")
    assert code == 0, err
    assert Image.open(tmp_path / "f" / "filters_conv_stem.png").mode == "RGB"
    assert (tmp_path / "f" / "activations_conv_stem.png").exists()
    code, _, err = run(capsys, "filters", "efficientnet-lite0", "--layer", "_bn1", "--out", tmp_path / "g")
    assert code == 2 and "has no convolution or linear weight" in err


def test_ig_default_passes_its_own_completeness_check(lite0):
    """The default path points keep the completeness gap under fvis's 5% warning; chelsea is the
    offline photo with the largest gap at the default (results/explain/ig_steps.md: 2.7%; 12.8% at
    the former default of 64 points)."""
    from skimage import data
    from torchvision.transforms.v2 import functional as F

    from fvis.attribution.integrated_gradients import GAP_WARNING, STEPS

    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    cat = F.center_crop(F.resize(cat, [224], antialias=True), [224, 224]).clamp(0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the completeness warning would fail the test
        a = E.integrated_gradients(lite0, cat, batch_size=32, progress=False)
    assert a.settings["steps"] == STEPS and a.settings["method"] == "gausslegendre"
    assert float(a.info["relative_gap"][0]) < GAP_WARNING
