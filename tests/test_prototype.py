"""Prototypes: activation matching, reference statistics cache, MACO, equidistant start, CLI."""
import json
import warnings

import pytest
import torch

import fvis
import objectives as obj
import regularizers as reg
from fvis.cli import main
from fvis.errors import FvisError
from fvis.hooks import Capture, frozen
from fvis.files import load_image, save_image
from fvis.param import MacoImage, natural_magnitude, resample_magnitude
from fvis.prototype import balance, make_prototypes, prototype_stem
from fvis.reference import reference_stats


def _acts(model, layers, x):
    with frozen(model), Capture(model, layers, truncate=False) as cap:
        return cap.forward(x)


def test_matching_is_zero_at_the_reference_statistics_and_grows_with_drift(lite0, coffee):
    layers = ["_blocks.3._bn2", "_blocks.9._bn2"]
    acts = _acts(lite0, layers, coffee[None])
    stats = {}
    for l in layers:  # the statistics of this very image
        flat = acts[l].flatten(2)[0]
        std = flat.std(1, unbiased=False)
        stats[l] = {"mean": flat.mean(1), "std": std, "target_std": torch.ones_like(std)}
    match = reg.ActivationMatching(stats, std_floor=0.0)
    assert match.penalty(coffee[None], acts).item() == pytest.approx(0.0, abs=1e-6)
    shifted = {l: {**s, "mean": s["mean"] + 0.5 * s["std"]} for l, s in stats.items()}
    wider = {l: {**s, "std": s["std"] * 2.0} for l, s in stats.items()}
    p_shift = reg.ActivationMatching(shifted, std_floor=0.0).penalty(coffee[None], acts).item()
    p_more = reg.ActivationMatching({l: {**s, "mean": s["mean"] + 1.0 * s["std"]} for l, s in stats.items()},
                                    std_floor=0.0).penalty(coffee[None], acts).item()
    assert p_shift == pytest.approx(0.25, rel=1e-3)  # (0.5 std)^2 per channel, mean over layers
    assert p_more > p_shift > 0
    assert reg.ActivationMatching(wider, std_floor=0.0).penalty(coffee[None], acts).item() > 0.2


def test_batchnorm_statistics_tell_a_photo_from_noise(lite0, coffee):
    match = reg.ActivationMatching(reg.batchnorm_stats(lite0, "per-block"))
    layers = list(match.layers)
    assert layers[0] == "_bn0" and all(l.endswith("_bn2") for l in layers[1:]) and len(layers) == 17
    noise = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    photo = match.penalty(coffee[None], _acts(lite0, layers, coffee[None])).item()
    assert photo < 0.5 * match.penalty(noise, _acts(lite0, layers, noise)).item()
    with pytest.raises(FvisError, match="not BatchNorm layers"):
        reg.batchnorm_stats(lite0, ["_blocks.3"])


def test_reference_statistics_cache_round_trips(lite0, coffee, tmp_path):
    folder = tmp_path / "ref"
    save_image(coffee, folder / "967_coffee.png")
    save_image(coffee.flip(-1), folder / "967_coffee_flip.png")
    save_image(coffee.flip(-2), folder / "other.png")
    (folder / "broken.png").write_bytes(b"not an image")
    layers = ["_blocks.3._bn2", "_blocks.15._bn2"]
    with pytest.warns(UserWarning):
        first = reference_stats(lite0, folder, layers, cache=tmp_path / "cache")
    assert not first["cached"] and first["images"] == 3 and first["classes"].tolist() == [967]
    assert len(list((tmp_path / "cache" / "stats").glob("*.safetensors"))) == 1
    again = reference_stats(lite0, folder, layers, cache=tmp_path / "cache")  # no model run: no warning
    assert again["cached"]
    for l in layers:
        for k in ("mean", "std", "target_std"):
            assert torch.equal(first["stats"][l][k], again["stats"][l][k])
        assert torch.equal(first["class_means"][l], again["class_means"][l])
    # the population mean is the mean of the three images' spatial means
    saved = torch.stack([load_image(folder / n, 224) for n in ("967_coffee.png", "967_coffee_flip.png", "other.png")])
    expected = _acts(lite0, layers, saved)["_blocks.3._bn2"].mean((2, 3))
    assert torch.allclose(first["stats"]["_blocks.3._bn2"]["mean"], expected.mean(0), atol=1e-4, rtol=1e-4)
    assert torch.allclose(first["class_means"]["_blocks.3._bn2"][0], expected[:2].mean(0), atol=1e-4, rtol=1e-4)


def test_balance_sets_the_gradient_ratio(lite0):
    image = fvis.FourierImage(96, batch=2, seed=0)
    match = reg.ActivationMatching(reg.batchnorm_stats(lite0, "per-block"))
    objective = obj.class_logits([94, 980])
    w = balance(lite0, objective, image, match, ratio=2.0)
    assert w == match.weight > 0
    # check the ratio by hand
    params = list(image.parameters())
    with frozen(lite0), Capture(lite0, set(match.layers) | {"output"}, truncate=False) as cap:
        x = image()
        acts = cap.forward(x)
        g_obj = torch.autograd.grad(objective(acts).sum(), params, retain_graph=True)[0].norm()
        g_pen = torch.autograd.grad(match.penalty(x, acts).sum(), params)[0].norm()
    assert (g_pen / g_obj).item() == pytest.approx(2.0, rel=1e-3)


def test_maco_keeps_its_amplitude_spectrum_and_follows_its_phase():
    image = MacoImage((64, 96), batch=2, seed=0)
    assert image().shape == (2, 3, 64, 96) and 0 <= image().min() and image().max() <= 1
    params = [n for n, _ in image.named_parameters()]
    assert params == ["phase"]  # only the phase is optimized
    pre = torch.fft.irfft2(torch.polar(image.magnitude.expand_as(image.phase), image.phase), s=(64, 96), norm="ortho")
    assert torch.allclose(torch.fft.rfft2(pre, norm="ortho").abs()[:, :, 1:, 1:-1],
                          image.magnitude.expand(2, -1, -1, -1)[:, :, 1:, 1:-1], rtol=1e-3, atol=1e-5)
    assert reg.high_frequency_energy(image()).max() < 0.05  # natural amplitude -> natural HFER
    photos = torch.rand(3, 3, 80, 80)
    assert natural_magnitude(photos, 64).shape == (3, 64, 33)
    assert resample_magnitude(natural_magnitude(photos), (40, 50)).shape == (3, 40, 26)


def test_objectives_for_prototypes(lite0):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    acts = _acts(lite0, ["output", "_blocks.15"], x)
    out = acts["output"]
    assert torch.equal(obj.class_logits([1, 5, 7])(acts), out[torch.arange(3), torch.tensor([1, 5, 7])])
    rows = torch.arange(3), torch.tensor([1, 5, 7])
    assert torch.allclose(obj.class_logits([1, 5, 7], score="log_prob")(acts), out.log_softmax(1)[rows])
    odds = obj.class_logits([1, 5, 7], score="log_odds")(acts)  # against torch.logit of p, in float64
    assert torch.allclose(odds.double(), torch.logit(out.double().softmax(1)[rows]), atol=1e-4)
    with pytest.raises(FvisError, match="log_odds"):
        obj.class_logits([1], score="log_odd")
    one_class = _acts(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 1)), ["output"], x)
    with pytest.raises(FvisError, match="log_odds needs at least 2 classes"):  # no rivals: +inf otherwise
        obj.class_logits([0, 0, 0], score="log_odds").check(one_class)
    eq = obj.equidistant()(acts)
    assert torch.allclose(eq, -out.softmax(1).var(1) * 1000 ** 2)
    grouped = obj.diversity("_blocks.15", groups=[0, 0, 1])(acts)
    assert grouped[2].item() == 0.0 and grouped[0].item() == pytest.approx(grouped[1].item())
    with pytest.raises(FvisError, match="out of range"):
        obj.class_logits([1, 5, 1000]).check(acts)


def test_short_prototype_run_raises_the_target_probability(lite0):
    with torch.no_grad():
        chance = lite0(torch.full((1, 3, 128, 128), 0.5)).softmax(1)[0, [94, 980]]
    protos = make_prototypes(lite0, ["hummingbird", 980], recipe="bn-item", steps=24, size=128, heldout=4,
                             progress=False)
    assert [p.cls for p in protos] == [94, 980] and [p.stem for p in protos] == ["94_hummingbird", "980_volcano"]
    for p, c in zip(protos, chance):
        assert p.metrics["clean_p"] > max(0.3, 50 * c.item())
        assert p.image.shape == (3, 128, 128) and len(p.history["matching"]) == 24
    assert protos[0].settings["match_weight"] > 0 and protos[0].settings["equidistant_max_p"] < 0.2
    assert prototype_stem(94, "hummingbird", 1, 3) == "94_hummingbird_1"


def test_prototype_cli_writes_images_json_index_and_sheet(tmp_path, capsys):
    out = tmp_path / "protos"
    rc = main(["prototype", "--model", "efficientnet-lite0", "--classes", "980,goldfinch", "--per-class", "2",
               "--steps", "6", "--size", "96", "--heldout", "2", "--quiet", "--out", str(out)])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    for stem in ("980_volcano_0", "980_volcano_1", "11_goldfinch_0", "11_goldfinch_1"):
        assert f"{stem}.png" in names and f"{stem}.json" in names
    assert "index.json" in names and "contact_sheet.png" in names
    meta = json.loads((out / "11_goldfinch_1.json").read_text())
    assert meta["class"] == 11 and meta["settings"]["diversity"] == 50.0 and "clean_p" in meta["metrics"]
    index = json.loads((out / "index.json").read_text())
    assert len(index["items"]) == 4
    assert "980_volcano_0.png" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--classes", "hummingbrid"], "unknown class name"),
    (["--classes", "1000"], "out of range"),
    (["--classes", "94", "--match", "pixels"], "match must be bn | images:DIR | seed | none"),
    (["--classes", "94", "--recipe", "vitall"], "Did you mean: vital"),
    (["--classes", "94", "--recipe", "robust-blur", "--init", "image:/no/such.png"], "path not found"),
    (["--classes", "94", "--init", "image:/no/such.png"], "alpha must be 0 with maco"),  # the default (colour-shift) is transparent too
    (["--classes", "94", "--match", "images:/no/such/dir"], "images path not found"),
    (["--classes", "94", "--match", "bn", "--match-layers", "_blocks.3"], "not BatchNorm layers"),
    (["--classes", "94", "--scale-range", "1.2,0.8"], "scale_range must be two scale factors 0 < lo <= hi"),
    (["--classes", "94", "--alpha", "5", "--coarse", "0.5"], "alpha must be 0 with maco, coarse-to-fine"),
    (["--classes", "94", "--alpha", "5", "--backdrop-share", "1.5"], "backdrop_share must be a share of the grounds in [0, 1]"),
    (["--classes", "94", "--decay-power", "-1"], "decay_power must be a finite number >= 0"),
    (["--classes", "94", "--centre", "-1"], "centre must be a finite number >= 0"),
    (["--classes", "94", "--colour-shift", "-1"], "colour_shift must be a finite number >= 0"),
])
def test_prototype_cli_bad_input(tmp_path, capsys, argv, message):
    rc = main(["prototype", "--model", "efficientnet-lite0", "--steps", "2", "--size", "64", "--quiet",
               "--out", str(tmp_path / "o"), *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--scale-range", "1.2"], "--scale-range: expected LO,HI"),
    (["--jitter", "-3"], "--jitter: expected an integer >= 0"),
    (["--score", "log-odds"], "--score: invalid choice: 'log-odds'"),
    (["--lr-schedule", "cosin"], "--lr-schedule: invalid choice: 'cosin'"),
])
def test_prototype_cli_transform_flags_are_checked_by_the_parser(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["prototype", "--model", "efficientnet-lite0", "--classes", "94", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("fvis: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_well_made_prototypes_are_not_entangled(lite0, tmp_path):
    """Entanglement of real prototypes: rows sum to 1 and each prototype is mostly its own class."""
    from fvis.entangle import entangle_folder
    from fvis.prototype import save_prototypes

    protos = make_prototypes(lite0, [94, 980, 967], recipe="transparent", steps=32, size=128, heldout=0, progress=False)
    save_prototypes(protos, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fvis's own contact sheet in the folder is not "a stray file"
        report = entangle_folder(tmp_path, lite0)
    P = torch.as_tensor(report["probability"]).double()
    assert torch.allclose(P.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert P.diagonal().min() > 0.8


def test_a_class_named_twice_is_made_once(lite0):
    """'94,hummingbird' is one class: one prototype (a second would overwrite the first's files)."""
    with pytest.warns(UserWarning, match="given more than once"):
        protos = make_prototypes(lite0, [94, "hummingbird"], steps=2, size=64, heldout=0, progress=False)
    assert [p.cls for p in protos] == [94]


def test_prototype_cli_says_when_a_backdrop_has_no_effect(tmp_path, capsys):
    rc = main(["prototype", "--model", "efficientnet-lite0", "--recipe", "robust-blur", "--classes", "94", "--steps", "1",
               "--size", "64", "--heldout", "0", "--quiet", "--backdrop", "grey", "--backdrop-share", "0.5", "--centre", "2", "--out", str(tmp_path / "o")])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 0 and len(lines) == 3, lines
    assert lines[0].startswith("fvis: warning: --backdrop has no effect without transparency (alpha > 0; recipe robust-blur")
    assert lines[1].startswith("fvis: warning: --backdrop-share has no effect")
    assert lines[2].startswith("fvis: warning: --centre has no effect")


def test_make_prototypes_says_when_a_setting_has_no_effect(lite0):
    """The API warns like the command line: centre without transparency is ignored, not silently."""
    with pytest.warns(UserWarning, match="centre has no effect without transparency") as seen:
        make_prototypes(lite0, [94], recipe="robust-blur", centre=2.0, steps=1, size=64, heldout=0, progress=False)
    assert len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # with transparency the same setting is used: no warning
        make_prototypes(lite0, [94], recipe="transparent", centre=2.0, steps=1, size=64, heldout=0, progress=False)
        make_prototypes(lite0, [94], recipe="robust-blur", centre=None, steps=1, size=64, heldout=0, progress=False)


def test_prototype_cli_centre_reaches_the_recipe_and_is_recorded(tmp_path, capsys):
    rc = main(["prototype", "--model", "efficientnet-lite0", "--recipe", "transparent", "--classes", "94", "--steps", "1",
               "--size", "64", "--heldout", "0", "--quiet", "--centre", "2", "--out", str(tmp_path / "o")])
    assert rc == 0 and "warning" not in capsys.readouterr().err
    meta = json.loads(next((tmp_path / "o").glob("94_*.json")).read_text())
    assert meta["settings"]["centre"] == 2.0 and meta["settings"]["alpha"] == 30.0


def test_prototype_cli_colour_shift_reaches_the_regularizer_and_is_recorded(tmp_path, monkeypatch):
    import regularizers

    seen = []
    init = regularizers.ColourShift.__init__
    monkeypatch.setattr(regularizers.ColourShift, "__init__", lambda self, s: (seen.append(s), init(self, s))[1])
    for shift, folder in (("0.1", "o"), ("0", "p")):
        rc = main(["prototype", "--model", "efficientnet-lite0", "--classes", "94", "--steps", "1", "--size", "64",
                   "--heldout", "0", "--quiet", "--colour-shift", shift, "--out", str(tmp_path / folder)])
        record = json.loads(next((tmp_path / folder).glob("94_*.json")).read_text())
        assert rc == 0 and record["settings"]["colour_shift"] == float(shift)
    assert seen == [0.1]  # 0: no shift at all (the default recipe's own is 0.3)


def test_prototype_cli_score_reaches_the_objective_and_is_recorded(tmp_path):
    rc = main(["prototype", "--model", "efficientnet-lite0", "--classes", "94", "--steps", "2", "--size", "64",
               "--heldout", "0", "--quiet", "--score", "log_odds", "--out", str(tmp_path / "o")])
    meta = json.loads(next((tmp_path / "o").glob("94_*.json")).read_text())
    assert rc == 0 and meta["settings"]["score"] == "log_odds"
    assert "log_odds" in meta["history"] and "logits" not in meta["history"]


def test_prototype_cli_lr_schedule_reaches_the_optimizer_and_is_recorded(tmp_path, monkeypatch):
    import fvis.prototype as proto

    seen = []
    real = proto.cosine
    monkeypatch.setattr(proto, "cosine", lambda steps, lr: (seen.append((steps, lr)), real(steps, lr))[1])
    for recipe, flag, expected in (("robust", "cosine", "cosine"), ("cosine", "constant", "constant"), ("cosine", None, "cosine")):
        out = tmp_path / f"{recipe}_{flag}"
        rc = main(["prototype", "--model", "efficientnet-lite0", "--recipe", recipe, "--classes", "94", "--steps", "2",
                   "--size", "64", "--heldout", "0", "--quiet", "--out", str(out)] + (["--lr-schedule", flag] if flag else []))
        meta = json.loads(next(out.glob("94_*.json")).read_text())
        assert rc == 0 and meta["settings"]["lr_schedule"] == expected
    assert seen == [(2, 0.05), (2, 0.05)]  # robust + cosine, and the cosine recipe's own; not with constant


def test_prototype_cli_decay_power_reaches_the_fourier_image_and_is_recorded(tmp_path, capsys, monkeypatch):
    from fvis.params import fourier

    seen = []
    init = fourier.FourierImage.__init__
    monkeypatch.setattr(fourier.FourierImage, "__init__",
                        lambda self, *a, **k: (seen.append(k.get("decay_power")), init(self, *a, **k))[1])
    rc = main(["prototype", "--model", "efficientnet-lite0", "--classes", "94", "--steps", "1", "--size", "64",
               "--heldout", "0", "--quiet", "--decay-power", "1.5", "--out", str(tmp_path / "o")])
    assert rc == 0 and seen == [1.5, 1.5]  # the image and its opacity (the default recipe's own: 1.25)
    record = json.loads(next((tmp_path / "o").glob("94_*.json")).read_text())
    assert record["settings"]["decay_power"] == 1.5
    rc = main(["prototype", "--model", "efficientnet-lite0", "--recipe", "robust-blur", "--param", "pixel", "--classes", "94",
               "--steps", "1", "--size", "64", "--heldout", "0", "--quiet", "--decay-power", "2", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 0 and err.startswith("fvis: warning: --decay-power has no effect with param pixel")
