"""fvis.concepts: TCAV scores, batched CAV fitting, gradient reuse, t-test, cache, CAV files, errors."""

import pytest
import torch
from torch import nn

import fvis
from fvis import concepts as C
from fvis.cli import main
from fvis.concepts.cavs import Problem, accuracy, fit_and_score, fit_cavs, scores
from fvis.concepts.stats import prediction_test

S = 24


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 3))


@pytest.fixture
def tiny():
    return fvis.wrap(tiny_net(), mean=None, std=None, input_size=S, class_names=["a", "b", "c"], name="tiny")


def backgrounds(n, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2
    low = nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=g) - 0.5, size=(S, S), mode="bilinear",
                                    align_corners=False)
    return (base + 0.3 * low).clamp(0, 1)


# ----------------------------------------------------------------------------- statistics

def test_t_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for na, nb, shift in [(20, 20, 0.0), (20, 20, 0.3), (5, 30, 0.1), (50, 7, -1.0)]:
        a = torch.rand(na, generator=g, dtype=torch.float64)
        b = torch.rand(nb, generator=g, dtype=torch.float64) + shift
        for equal_var in (True, False):
            t, p = C.t_test(a, b, equal_var)
            ref = stats.ttest_ind(a.numpy(), b.numpy(), equal_var=equal_var)
            assert t == pytest.approx(ref.statistic, rel=1e-9)
            assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-14)
    assert C.t_test([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    assert C.t_test([1.0, 1.0], [0.5, 0.5])[1] == 0.0
    # the prediction test is the two-sample t-test of one value against the sample (Student's)
    ref = stats.ttest_ind([0.9], [0.2, 0.5, 0.4, 0.3], equal_var=True)
    sample = torch.tensor([0.2, 0.5, 0.4, 0.3], dtype=torch.float64)
    t, p = prediction_test(0.9, sample)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


# ----------------------------------------------------------------------------- CAV fitting

def _problems(N, K, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(K):
        perm = torch.randperm(N, generator=g)
        n_pos, n_neg = 10 + k % 4, 12 + k % 3
        out.append(Problem(perm[:n_pos], perm[n_pos:n_pos + n_neg], perm[-5:-2], perm[-2:]))
    return out


@pytest.mark.parametrize("method", ["logistic", "svm", "fastcav"])
def test_batched_fit_equals_per_run_fit(method):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(60, 40, generator=g) + torch.linspace(0, 1, 40)
    problems = _problems(60, 7, 2)
    cavs, W, b = fit_cavs(X, problems, method)
    for k, p in enumerate(problems):
        c1, W1, b1 = fit_cavs(X, [p], method)
        assert torch.allclose(cavs[k], c1[0], atol=1e-5), (method, k)
        assert torch.allclose(W[k], W1[0], rtol=1e-4, atol=1e-6)
        assert b[k].item() == pytest.approx(b1[0].item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(cavs.norm(dim=1), torch.ones(len(problems)))


@pytest.mark.parametrize("method", ["logistic", "svm", "fastcav"])
def test_scoring_in_the_span_equals_dense_cavs(method):
    """fit_and_score (null CAVs never formed densely) gives what fit_cavs + accuracy + scores give."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 40, generator=g) + torch.linspace(0, 1, 40)
    grads = torch.randn(9, 40, generator=g)
    problems = _problems(60, 12, 4)
    cavs, W, b = fit_cavs(X, problems, method)
    count, magnitude, _ = scores(grads, cavs)
    acc = accuracy(X, problems, W, b)
    keep = torch.tensor([0, 3, 11])
    c2, n2, b2, count2, magnitude2, acc2 = fit_and_score(X, problems, grads, keep, method)
    assert torch.allclose(c2, cavs[keep], atol=1e-5) and torch.allclose(n2, W[keep].norm(dim=1), rtol=1e-4)
    assert torch.allclose(b2, b, rtol=1e-4, atol=1e-5)
    assert torch.equal(count2, count) and torch.allclose(magnitude2, magnitude, atol=1e-5)
    assert torch.equal(acc2, acc)
    if method != "fastcav":  # in chunks (sharing one Gram matrix) as in one piece
        c3, W3, b3 = fit_cavs(X, problems, method, chunk=5)
        assert torch.allclose(c3, cavs, atol=1e-5) and torch.allclose(b3, b, rtol=1e-4, atol=1e-5)


def test_logistic_fit_is_the_optimum():
    """The Newton solution in the span of the rows is the primal optimum: the gradient vanishes."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 30, generator=g, dtype=torch.float64).float()
    p = _problems(50, 1, 4)[0]
    l2 = 1e-2
    _, W, b = fit_cavs(X, [p], "logistic", l2)
    scale = X.pow(2).sum(1).mean().sqrt()
    w = (W[0] * scale).double().requires_grad_(True)
    bb = b[0].double().clone().requires_grad_(True)
    Xs = (X / scale).double()
    f = torch.cat([Xs[p.pos], Xs[p.neg]]) @ w + bb
    y = torch.cat([torch.ones(len(p.pos)), -torch.ones(len(p.neg))]).double()
    loss = nn.functional.softplus(-y * f).mean() + 0.5 * l2 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, [w, bb])
    assert gw.abs().max() < 1e-5 and abs(gb.item()) < 1e-5


def test_separable_concept_gets_an_accurate_cav():
    g = torch.Generator().manual_seed(5)
    direction = torch.randn(32, generator=g)
    X = torch.randn(80, 32, generator=g)
    X[:40] += 1.5 * direction / direction.norm() * 3
    p = Problem(torch.arange(30), torch.arange(40, 70), torch.arange(30, 40), torch.arange(70, 80))
    for method in ("logistic", "svm", "fastcav"):
        cavs, W, b = fit_cavs(X, [p], method)
        assert accuracy(X, [p], W, b)[0] >= 0.9
        assert torch.dot(cavs[0], direction / direction.norm()) > 0.6


# ----------------------------------------------------------------------------- gradients

def test_gradient_reuse_equals_per_cav_directional_derivative(tiny):
    """One gradient per image and a matrix product == the derivative of the logit along each CAV,
    computed separately by moving the layer's output along the CAV."""
    x = backgrounds(4, 0)
    grads = C.compute_gradients(tiny, x, ["2"], target=1)["2"]
    cavs = nn.functional.normalize(torch.randn(3, grads.shape[1]), dim=1)
    _, _, S_batched = scores(grads, cavs)
    layer = tiny.net[2]
    for k in range(3):
        eps = torch.zeros((), requires_grad=True)
        v = cavs[k].view(1, 16, S // 2, S // 2)
        h = layer.register_forward_hook(lambda m, i, o: o + eps * v)
        try:
            out = tiny(x)
        finally:
            h.remove()
        for i in range(len(x)):
            (d,) = torch.autograd.grad(out[i, 1], eps, retain_graph=True)
            assert S_batched[i, k].item() == pytest.approx(d.item(), rel=1e-4, abs=1e-6)


def test_gradients_leave_the_model_as_it_was(tiny):
    tiny.train()
    before = [p.requires_grad for p in tiny.parameters()]
    C.compute_gradients(tiny, backgrounds(2, 0), ["0", "2"], target=0)
    assert tiny.training and [p.requires_grad for p in tiny.parameters()] == before
    assert all(p.grad is None for p in tiny.parameters())
    assert not any(m._forward_hooks for m in tiny.modules())


# ----------------------------------------------------------------------------- tcav end to end

def _run(model, tmp_path, **kw):
    args = dict(runs=5, cache=tmp_path / "cache", min_images=6)
    args.update(kw)
    return C.tcav(model, ["2"], "b", backgrounds(8, 1),
                  {"stripes": C.texture("stripes", 12, S, 2, scale=(3, 8)), "red": C.colour("red", 12, S, 3)},
                  backgrounds(80, 4), **args)


def test_cache_round_trips(tiny, tmp_path):
    r1 = _run(tiny, tmp_path)
    files = sorted((tmp_path / "cache" / "tcav").glob("*.safetensors"))
    assert len(files) == 4  # stripes, red, random pool activations + class-image gradients
    r2 = _run(tiny, tmp_path)
    assert sorted((tmp_path / "cache" / "tcav").glob("*.safetensors")) == files
    for a, b in zip(r1.results, r2.results):
        assert torch.equal(a.cavs, b.cavs) and torch.equal(a.scores, b.scores)
    r3 = _run(tiny, tmp_path, cache=False)
    assert torch.allclose(r3.results[0].cavs, r1.results[0].cavs, atol=1e-6)
    # another model (other weights) never reads these entries
    other = fvis.wrap(tiny_net(1), mean=None, std=None, input_size=S, class_names=["a", "b", "c"], name="tiny")
    _run(other, tmp_path)
    assert len(list((tmp_path / "cache" / "tcav").glob("*.safetensors"))) == 8


def test_tcav_result_fields_and_cav_files(tiny, tmp_path):
    r = _run(tiny, tmp_path, relative=False)
    rec = r.records()
    assert [x["concept"] for x in rec] == ["stripes", "red"]
    for x in rec:
        assert {"concept", "layer", "target", "score_mean", "score_std", "p_value", "significant",
                "cav_accuracy"} <= set(x)
        assert x["target"] == 1 and len(x["scores"]) == 5 and 0 <= x["p_value"] <= 1
        assert x["p_corrected"] == pytest.approx(min(1, 2 * x["p_value"]))
    null = r.random["2"]
    assert len(null.scores) == 5
    first = r.results[0]
    assert first.p_runs == pytest.approx(C.t_test(first.scores, null.scores)[1])
    assert first.p_sets == pytest.approx(prediction_test(first.score_mean, r.null_means["2"])[1])
    assert first.p_value == first.p_runs and rec[0]["p_value_sets"] == first.p_sets
    assert _run(tiny, tmp_path, test="sets").results[0].p_value == pytest.approx(first.p_sets)
    path = r.save_cavs(tmp_path / "cavs.safetensors")
    cs = C.load_cavs(path)
    assert [e["concept"] for e in cs.entries] == ["stripes", "red", "random"]
    assert torch.equal(cs.cavs[0], r.results[0].cavs)
    # explaining new images with the saved CAVs: no refit, same derivatives as the class images'
    x = backgrounds(8, 1)
    sens = C.sensitivity(tiny, x, path)
    assert sens.derivative.shape == (8, 3)
    share = (sens.positive_share[:, 0] > 0.5).float().mean()
    g = C.compute_gradients(tiny, x, ["2"], 1)["2"]
    assert torch.allclose(sens.derivative[:, 0], (g @ r.results[0].cavs.T).mean(1), atol=1e-5)
    assert 0 <= share <= 1


def test_relative_tcav_fits_concepts_against_each_other(tiny, tmp_path):
    r = _run(tiny, tmp_path, relative=True)
    # stripes vs red and red vs stripes point in (nearly) opposite directions
    s, c = r.get("stripes").cavs.mean(0), r.get("red").cavs.mean(0)
    assert torch.nn.functional.cosine_similarity(s, c, dim=0) < -0.5
    assert r.settings["relative"] is True


def test_bad_inputs_give_one_clear_error(tiny, tmp_path):
    cls, rnd = backgrounds(4, 1), backgrounds(40, 4)
    ok = {"stripes": C.texture("stripes", 12, S, 2)}
    with pytest.raises(fvis.FvisError, match="concept 'few' has 3 images"):
        C.tcav(tiny, "2", 1, cls, {"few": C.texture("dots", 3, S)}, rnd, runs=4, cache=False, min_images=6)
    with pytest.raises(fvis.FvisError, match="unknown layer 'nope'"):
        C.tcav(tiny, "nope", 1, cls, ok, rnd, runs=4, cache=False)
    with pytest.raises(fvis.FvisError, match="out of range"):
        C.tcav(tiny, "2", 7, cls, ok, rnd, runs=4, cache=False, min_images=6)
    with pytest.raises(fvis.FvisError, match="unknown class name"):
        C.tcav(tiny, "2", "zebra", cls, ok, rnd, runs=4, cache=False, min_images=6)
    with pytest.raises(fvis.FvisError, match="same images"):
        C.tcav(tiny, "2", 1, cls, {"same": rnd.clone()}, rnd, runs=4, cache=False, min_images=6)
    with pytest.raises(fvis.FvisError, match="random pool has 40 images"):
        C.tcav(tiny, "2", 1, cls, ok, rnd, runs=20, cache=False, min_images=6)
    with pytest.raises(fvis.FvisError, match="unknown CAV classifier"):
        C.tcav(tiny, "2", 1, cls, ok, rnd, runs=4, cav="tree", cache=False)
    with pytest.raises(fvis.FvisError, match="relative TCAV needs at least two"):
        C.tcav(tiny, "2", 1, cls, ok, rnd, runs=4, relative=True, cache=False)
    with pytest.raises(fvis.FvisError, match="unknown test"):
        C.tcav(tiny, "2", 1, cls, ok, rnd, runs=4, test="anova", cache=False)
    folder = C.save_folder(rnd[:12], tmp_path / "pool")
    with pytest.raises(fvis.FvisError, match="same images"):
        C.tcav(tiny, "2", 1, cls, {"pool": folder}, folder, runs=3, cache=False, min_images=4)


# ----------------------------------------------------------------------------- synthetic sources

def test_synthetic_concepts_are_seeded_and_in_range(tmp_path):
    for kind in C.KINDS:
        a, b = C.texture(kind, 3, 32, seed=1), C.texture(kind, 3, 32, seed=1)
        assert a.shape == (3, 3, 32, 32) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
        assert a.std() > 0.1  # a real two-colour pattern
    red = C.colour("red", 4, 16)
    assert (red[:, 0].mean() > 0.6) and (red[:, 1].mean() < 0.3)
    assert C.concept("colour:blue", 2, 8).shape == (2, 3, 8, 8)
    with pytest.raises(fvis.FvisError, match="unknown synthetic concept"):
        C.concept("plaid", 2)
    photos = C.save_folder(C.texture("checks", 2, 64), tmp_path / "photos")
    crops = C.random_crops(photos, 10, 32, seed=0)
    assert crops.shape == (10, 3, 32, 32) and torch.equal(crops, C.random_crops(photos, 10, 32, seed=0))


# ----------------------------------------------------------------------------- controlled experiment

def _paste(img, tex, seed, right):
    g = torch.Generator().manual_seed(seed)
    out = img.clone()
    for i in range(len(img)):
        y = int(torch.randint(0, S - 12 + 1, (1,), generator=g))
        x = 12 if right else 0
        out[i, :, y:y + 12, x:x + 12] = tex[i, :, :12, :12]
    return out


class _LogOdds(nn.Module):
    def forward(self, z):  # class 0 logit fixed at 0: class 1's logit is the log-odds
        return torch.cat([torch.zeros_like(z), z], 1)


class _Gray(nn.Module):
    def forward(self, x):  # the network is colour-blind by construction: it sees luminance only
        return (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:])


def _planted(n, seed):
    """Backgrounds; class 1 gets a stripes patch (the planted concept); a reddish tint that keeps
    the luminance is applied to half of both classes (the concept the network cannot depend on)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = backgrounds(n, seed + 1)
    x = torch.where(y[:, None, None, None] == 1, _paste(x, C.texture("stripes", n, S, seed + 2, scale=(3, 8)), seed + 3,
                                                        False), x)
    tinted = torch.rand(n, generator=g) < 0.5
    return torch.where(tinted[:, None, None, None], _tint(x), x), y


def _tint(x):
    return x + torch.tensor([0.15, -0.15 * 0.299 / 0.587, 0.0]).view(1, 3, 1, 1)  # zero luminance change


def test_controlled_experiment_planted_concept_is_significant_others_are_not(tmp_path):
    """As the TCAV paper's captions experiment: ground truth known by construction."""
    torch.manual_seed(0)
    net = nn.Sequential(_Gray(), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 1), _LogOdds())
    x, y = _planted(384, 0)
    opt = torch.optim.Adam(net.parameters(), 3e-3, weight_decay=1e-4)
    for _ in range(8):
        for i in range(0, len(x), 32):
            loss = nn.functional.cross_entropy(net(x[i:i + 32]), y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt = _planted(256, 100)
    with torch.no_grad():
        assert (net(xt).argmax(1) == yt).float().mean() > 0.85
    model = fvis.wrap(net, mean=None, std=None, input_size=S, class_names=["plain", "striped"], name="planted")
    concepts = {"stripes": C.texture("stripes", 30, S, 7, scale=(3, 8)),  # planted: the class depends on it
                "reddish": _tint(backgrounds(30, 8)),                    # present, but invisible to the network
                "arbitrary": backgrounds(30, 9)}                         # a fixed set of random images
    r = C.tcav(model, ["4"], "striped", xt[yt == 1][:40], concepts, backgrounds(600, 10), runs=20, cache=False)
    got = {x.concept: x for x in r.results}
    assert got["stripes"].significant and got["stripes"].score_mean > 0.9 and got["stripes"].p_value < 1e-3
    assert got["stripes"].accuracies.mean() > 0.8
    # the set-level test is more conservative but still ranks the planted concept first
    assert got["stripes"].p_sets < min(got["reddish"].p_sets, got["arbitrary"].p_sets)
    assert not got["reddish"].significant
    assert not got["arbitrary"].significant


# ----------------------------------------------------------------------------- command line

def _cli(argv):
    import argparse

    from fvis.commands import tcav as cli

    p = argparse.ArgumentParser(prog="fvis tcav")
    cli.add_arguments(p)
    return cli.run(p.parse_args(argv))


def test_cli_tcav_run_and_explain(tiny, tmp_path, monkeypatch, capsys):
    import csv
    import json

    monkeypatch.setattr("fvis.commands.tcav.load_model", lambda args: tiny)
    cls = C.save_folder(backgrounds(6, 1), tmp_path / "class")
    photos = C.save_folder(backgrounds(5, 4), tmp_path / "photos")
    red = C.save_folder(C.colour("red", 8, S, 3), tmp_path / "red")
    out = tmp_path / "out"
    _cli(["--model", "tiny", "--layer", "2,0", "--target", "b", "--class-images", str(cls),
          "--concept", f"red={red}", "--concept", "stripes=synthetic:stripes", "--synthetic-count", "8",
          "--random", str(photos), "--runs", "3", "--min-images", "4", "--no-cache", "--out", str(out)])
    report = json.loads((out / "tcav.json").read_text())
    assert report["schema"] == "fvis.tcav/1" and len(report["results"]) == 4
    rec = report["results"][0]
    for key in ("concept", "layer", "target", "score_mean", "score_std", "p_value", "significant", "cav_accuracy"):
        assert key in rec
    assert [(r["concept"], r["layer"]) for r in report["results"]] == [("red", "2"), ("red", "0"), ("stripes", "2"),
                                                                       ("stripes", "0")]
    assert report["settings"]["random_pool"] == 24  # too few photos: 3 runs x 8 crops
    rows = list(csv.DictReader((out / "tcav.csv").open()))
    assert len(rows) == 4 and rows[0]["concept"] == "red"
    assert (out / "tcav.png").stat().st_size > 5000
    assert "random pool: 24 random crops" in capsys.readouterr().out
    # explain new images with the saved CAVs
    _cli(["--model", "tiny", "--explain", str(cls), "--cavs", str(out), "--out", str(tmp_path / "ex")])
    printed = capsys.readouterr().out
    assert "img_0000.png" in printed and "stripes" in printed
    ex = json.loads((tmp_path / "ex" / "explain.json").read_text())
    assert len(ex["records"]) == 6 * 6 and (tmp_path / "ex" / "explain.png").is_file()


def test_cli_bad_inputs(tiny, tmp_path, monkeypatch, capsys):
    """Each bad input of the issue: one ``fvis: error:`` line on stderr, exit 2, nothing on stdout
    before it (every check runs before the first line of output)."""
    monkeypatch.setattr("fvis.commands.tcav.load_model", lambda args: tiny)
    cls = C.save_folder(backgrounds(4, 1), tmp_path / "class")
    photos = C.save_folder(backgrounds(3, 4), tmp_path / "photos")  # too few: the command makes crops
    few = C.save_folder(C.colour("red", 3, S), tmp_path / "few")
    base = ["tcav", "--model", "tiny", "--layer", "2", "--target", "1", "--class-images", str(cls),
            "--random", str(photos), "--runs", "3", "--no-cache", "--out", str(tmp_path / "o")]
    dots = ["--concept", "s=synthetic:dots"]

    def fails(argv, message):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and out == "", (code, out, err)
        assert err.startswith("fvis: error: ") and err.count("\n") == 1 and message in err, err

    fails(base, "needs --concept")
    fails(base + ["--concept", f"few={few}"], "concept 'few' has 3 images")
    fails(base + ["--concept", f"same={photos}"], "same folder")
    fails(base[:3] + ["--layer", "99"] + base[5:] + dots, "unknown layer")
    fails(base[:5] + ["--target", "3"] + base[7:] + dots, "out of range")
    fails(base[:5] + ["--target", "zebra"] + base[7:] + dots, "unknown class name")
    fails(base + ["--concept", "stripes"], "NAME=DIR")
    fails(base[:10] + [str(tmp_path / "nowhere")] + base[11:] + dots, "--random: not a folder")
    fails(base + dots + ["--random-crops", "20", "--min-images", "8"], "random pool has 20 images")
    fails(["tcav", "--model", "tiny", "--explain", str(cls)], "needs --cavs")
    fails(["tcav", "--model", "tiny", "--explain", str(cls), "--cavs", str(cls)], "CAV file not found")
    assert not (tmp_path / "o" / "tcav.json").exists()


def test_saved_cav_renders_as_a_direction_objective(tiny, tmp_path):
    for pool in ("flatten", "mean"):
        r = _run(tiny, tmp_path, pool=pool, cache=False)
        path = r.save_cavs(tmp_path / f"cavs-{pool}.safetensors")
        obj = C.cav_objective(path, "stripes")
        image = fvis.PixelImage(S, batch=1, seed=0)
        res = fvis.optimize(tiny, obj, image, [], steps=8, lr=0.05, seed=0)
        assert res.history["objective"][-1, 0] > res.history["objective"][0, 0]
    with pytest.raises(fvis.FvisError, match="no CAV for concept 'plaid'"):
        C.cav_objective(path, "plaid")
