"""Issue 22: APGD's checkpoints and step-size halving, the DLR loss, Square without gradients and
with counted queries, C&W's small perturbations, and the robustness report against a hand count."""
import csv
import json

import pytest
import torch
from PIL import Image

import objectives as obj
from fvis.attacks import APGD, apgd, attack, checkpoints, cw, robustness, square
from fvis.cli import main
from fvis.errors import FvisError
from fvis.files import load_image
from fvis.param import Perturbation


class NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this model must not be differentiated")


class Toy(torch.nn.Module):
    """A seeded linear classifier on 3x8x8 images (5 classes); ``no_backward``: backward raises."""

    def __init__(self, no_backward=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 8 * 8, 5)
        self.no_backward, self.rows = no_backward, 0

    def forward(self, x):
        self.rows += x.shape[0]
        x = NoBackward.apply(x) if self.no_backward else x
        return self.fc(x.flatten(1)) * 4


def images(n=6, seed=0, low=0.0, high=1.0):
    x = low + (high - low) * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (x * 255).round() / 255


def test_apgd_checkpoints_and_halving_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): for N = 100 by hand
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(50) == [11, 21, 30, 38, 45]
    param = Perturbation(torch.full((3, 1, 4, 4), 0.5), eps=0.1, norm="linf")
    opt = APGD(param, steps=50)
    for step in range(50):
        # item 0 rises every step; item 1 never moves; item 2 is best at the start, then falls
        values = torch.tensor([float(step), 0.0, -float(step)])
        opt.observe(values)
        param.adv.grad = -torch.ones_like(param.adv)  # loss gradient: the ascent direction is +1
        opt.step()
        param.after_step()
    assert [s for s, _ in opt.halved] == checkpoints(50)
    halved = torch.stack([h for _, h in opt.halved])  # (checkpoints, items)
    assert not halved[:, 0].any()  # rose in every step: condition 1 false; best improved: condition 2 false
    assert halved[:, 1].all() and halved[:, 2].all()  # no rise in >= 75% of the steps: halve every time
    assert torch.allclose(opt.eta, torch.tensor([0.2, 0.2 / 32, 0.2 / 32]))
    assert torch.equal(opt.x_best[2], torch.full((1, 4, 4), 0.5))  # item 2's best point is its start


def test_apgd_momentum_step_by_hand():
    param = Perturbation(torch.full((1, 1, 1, 2), 0.5), eps=0.3, norm="linf")
    opt = APGD(param, steps=10)
    for values, grad in [(0.0, [-1.0, 1.0]), (1.0, [-1.0, -1.0])]:
        opt.observe(torch.tensor([values]))
        param.adv.grad = torch.tensor(grad).view(1, 1, 1, 2)
        opt.step()
    # step 1 (no momentum): x1 = P(0.5 + 0.6 * (+1, -1)) = (0.8, 0.2); step 2: z = P(x1 + 0.6) = (0.8, 0.8),
    # x2 = P(x1 + 0.75 (z - x1) + 0.25 (x1 - x0)) = (0.8 + 0.075, 0.2 + 0.45 - 0.075) -> clip (0.8, 0.575)
    assert torch.allclose(param.adv.detach().flatten(), torch.tensor([0.8, 0.575]))


def test_dlr_matches_its_formula():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.5, 4.0, -1.0, 2.5]])
    # untargeted: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)
    assert torch.allclose(obj.adversarial.dlr(z, torch.tensor([0, 3])),
                          torch.tensor([-(3 - 2) / (3 - 1), -(2.5 - 4) / (4 - 0.5)]))
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert torch.allclose(obj.adversarial.dlr(z, torch.tensor([0, 1]), torch.tensor([1, 2])),
                          torch.tensor([-(3 - 1) / (3 - 0.5), -(4 + 1) / (4 - (0.5 - 1) / 2)]))
    # shift and scale invariant
    assert torch.allclose(obj.adversarial.dlr(3 * z + 7, torch.tensor([0, 3])), obj.adversarial.dlr(z, torch.tensor([0, 3])))


def test_apgd_attacks_toy_model_and_apgd_t_reaches_a_target():
    model, x = Toy(), images()
    plain = attack(model, x, method="pgd", eps=0.3, steps=20, progress=False)
    for kwargs in ({"loss": "ce"}, {"loss": "dlr"}, {"targets": 3}):
        r = apgd(model, x, eps=0.3, steps=20, progress=False, **kwargs)
        assert r.success.sum() >= max(plain.success.sum(), 5), kwargs  # at least as strong as PGD here
        assert (r.linf <= 0.3 + 1e-6).all()


@pytest.mark.parametrize("norm,eps", [("linf", 40 / 255), ("l2", 4.0)])
def test_square_never_differentiates_and_counts_queries(norm, eps):
    model, x = Toy(no_backward=True), images(low=0.25, high=0.75)
    labels = model(x).argmax(1)
    with pytest.raises(RuntimeError):  # the model really refuses a backward pass
        model(x.requires_grad_()).sum().backward()
    x = x.detach()
    model.rows = 0
    r = square(model, x, labels=labels, eps=eps, norm=norm, steps=300, seed=0, progress=False)
    assert r.success.float().mean() >= 0.5
    assert (r.queries >= 1).all() and (r.queries <= 300).all()
    # every forward row is a counted query, plus the engine's 1-row dry run and the 8-bit judging pass
    assert model.rows == int(r.queries.sum()) + 1 + len(x)
    size = r.linf if norm == "linf" else r.l2
    assert (size <= eps + 1e-6).all()
    assert (r.queries[r.success] < 300).all()  # successful items stopped querying


def test_cw_smaller_l2_than_pgd_at_equal_success():
    model, x = Toy(), images(low=0.25, high=0.75)
    labels = model(x).argmax(1)
    p = attack(model, x, method="pgd", labels=labels, eps=2.0, norm="l2", steps=20, kappa=1.0, progress=False)
    c = cw(model, x, labels=labels, steps=50, search_steps=4, lr=0.05, kappa=1.0, progress=False)
    both = p.success & c.success
    assert both.sum() >= 5 and c.success.sum() >= p.success.sum()
    assert (c.l2[both] < p.l2[both]).all()
    assert c.l2[both].median() < 0.8 * p.l2[both].median()


def _folder(tmp_path, coffee):
    folder = tmp_path / "in"
    folder.mkdir()
    crops = {"cup": coffee[:, :96, :96], "cup_flip": coffee[:, 100:196, 100:196].flip(-1),
             "cup_dark": coffee[:, 60:156, 40:136] * 0.6}
    for name, img in crops.items():
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"{name}.png")
    return folder


def test_report_matches_a_hand_count(tmp_path, coffee, lite0):
    folder = _folder(tmp_path, coffee)
    paths = sorted(folder.glob("*.png"))
    with torch.no_grad():
        clean = (torch.stack([load_image(p, lite0.input_size) for p in paths]) * 255).round() / 255
        pred = lite0(clean).argmax(1)
    labels = [int(pred[0]), 0, int(pred[2])]  # the middle image's label (tench) is wrong on purpose
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{p.name},{c}\n" for p, c in zip(paths, labels)))
    out = tmp_path / "out"
    assert main(["robustness", "--model", "efficientnet-lite0", "--images", str(folder), "--labels",
                 str(tmp_path / "labels.csv"), "--eps", "1/255", "--attacks", "square,apgd-ce", "--queries", "2",
                 "--steps", "3", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["image"] for r in rows] == [p.stem for p in paths]
    # the hand count: correct on the clean image, and no saved adversarial PNG that is wrong within eps
    robust = 0
    for p, label, row in zip(paths, labels, rows):
        correct = int(pred[paths.index(p)]) == label
        adv_file = out / f"{p.stem}_adv.png"
        fooled = False
        if adv_file.is_file():
            adv = load_image(adv_file)
            with torch.no_grad():
                fooled = int(lite0(adv[None]).argmax(1)) != label
            assert (adv - clean[paths.index(p)]).abs().max() <= 1 / 255 + 1e-6
        assert (row["robust"] == "True") == (correct and not fooled)
        robust += correct and not fooled
    assert report["clean_accuracy"] == pytest.approx(2 / 3)
    assert report["robust_accuracy"] == pytest.approx(robust / 3)
    assert list(report["per_attack"]) == ["square", "apgd-ce"]
    assert report["per_attack"]["apgd-ce"] == report["robust_accuracy"]
    assert report["attacks"][1]["attacked"] == 2 - report["attacks"][0]["fooled"]  # only the still-correct ones
    assert "robust accuracy" in (out / "report.md").read_text()
    # the Python API gives the same numbers
    r = robustness(lite0, clean, labels, eps=1 / 255, attacks=["square", "apgd-ce"], queries=2, steps=3, progress=False)
    assert r.clean_accuracy == report["clean_accuracy"] and r.per_attack == report["per_attack"]


def test_robustness_and_attack_bad_input(tmp_path, coffee, capsys):
    folder = _folder(tmp_path, coffee)
    out = tmp_path / "out"
    (tmp_path / "partial.csv").write_text("cup.png,espresso\ncup_flip.png,espresso\n")
    (tmp_path / "range.csv").write_text("cup.png,1000\ncup_flip.png,1\ncup_dark.png,2\n")
    base = ["robustness", "--model", "efficientnet-lite0", "--images", str(folder), "--quiet", "--out", str(out)]
    bad = [
        (["--eps", "0"], "must be > 0"),
        (["--attacks", "apgd-ce,sqare"], "Did you mean: square"),
        (["--labels", str(tmp_path / "partial.csv")], "no label for cup_dark.png"),
        (["--labels", str(tmp_path / "range.csv")], "out of range"),
    ]
    for args, message in bad:
        try:
            code = main(base + args)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, args
    assert not (out / "report.json").exists()
    cup = str(folder / "cup.png")
    for args, message in [(["--method", "apgd-t", "--target", "goldfinch"], "use --untargeted"),
                          (["--method", "square", "--untargeted", "--step-size", "1/255"], "--step-size is for"),
                          (["--method", "cw", "--untargeted", "--norm", "linf"], "L2 attack")]:
        assert main(["attack", "--model", "efficientnet-lite0", "--image", cup, *args, "--quiet",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, args


def test_attack_cli_new_methods(tmp_path, coffee, capsys):
    folder = _folder(tmp_path, coffee)
    for method, extra in [("apgd", ["--loss", "dlr"]), ("square", ["--steps", "30"])]:
        out = tmp_path / method
        assert main(["attack", "--model", "efficientnet-lite0", "--image", str(folder / "cup.png"), "--untargeted",
                     "--method", method, "--eps", "2/255", "--steps", "5", *extra, "--heldout", "0", "--quiet",
                     "--out", str(out)]) == 0
        meta = json.loads((out / "cup.json").read_text())
        assert meta["success"] and meta["linf_255"] <= 2 + 1e-4 and meta["settings"]["method"] == method
        if method == "square":
            assert 1 <= meta["queries"] <= 30


def test_bad_input_through_the_python_api(lite0, coffee, capsys):
    # the same four checks as the CLI, raised as FvisError before any attack runs
    x = torch.stack([coffee[:, :96, :96], coffee[:, 100:196, 100:196]])
    bad = [
        (dict(labels=[1, 2], eps=0.0), "eps must be > 0"),
        (dict(labels=[1, 2], eps=-1 / 255), "eps must be > 0"),
        (dict(labels=[1, 2], eps=1 / 255, attacks=["apgd-ce", "apgd-tt"]), "Did you mean: apgd-t"),
        (dict(labels=[1], eps=1 / 255), "1 labels for 2 images"),
        (dict(labels=[1, 1000], eps=1 / 255), "label out of range"),
        (dict(labels=[-1, 2], eps=1 / 255), "label out of range"),
    ]
    for kwargs, message in bad:
        with pytest.raises(FvisError, match=message):
            robustness(lite0, x, progress=False, **kwargs)
    for method in ("apgd", "apgd-t", "square"):  # eps <= 0 refused by every eps-ball attack
        with pytest.raises(FvisError, match="eps must be > 0"):
            attack(lite0, x, method=method, eps=0.0, progress=False)
    with pytest.raises(FvisError, match="Did you mean: square"):
        attack(lite0, x, method="sqare")
    # the CLI: a misspelt --method is one line, exit 2 (argparse's choices, no usage block)
    with pytest.raises(SystemExit) as e:
        main(["attack", "--model", "efficientnet-lite0", "--image", "x.png", "--method", "apgdt", "--untargeted"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "apgd-t" in err and len(err.strip().splitlines()) == 1


def test_cw_early_abort_per_item_and_whole_batch():
    from types import SimpleNamespace

    from fvis.attacks.cw import KEEP, Distance, Smallest

    clean = torch.zeros(2, 1, 1, 2)
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # neither item fooled (class 0 wins): only the loss matters
    for whole_batch, expected in [(False, [False, True]), (True, [True, True])]:
        distance = Distance(clean)
        policy = Smallest(clean, torch.tensor([0, 0]), False, check=3, distance=distance, whole_batch=whole_batch)
        # loss = -objective + squared distance (0 here); item 0 keeps falling, item 1 rises once; sum rises
        for step, values in [(0, [-4.0, -1.0]), (1, [9.0, 9.0]), (2, [9.0, 9.0]), (3, [-3.9, -3.0])]:
            distance.penalty(clean, SimpleNamespace(rows=lambda t: t))
            policy.observe(SimpleNamespace(step=step), torch.tensor(values), {"output": logits}, None)
            if step in (1, 2):  # checks only at steps 0, 3, 6, ... (C&W's code): nothing stalls in between
                assert not policy.stalled.any()
        assert policy.stalled.tolist() == expected, whole_batch
        assert policy.best.shape[0] == KEEP and torch.isinf(policy.l2).all()  # never fooled: nothing kept
    with pytest.raises(FvisError, match="abort_early"):
        cw(Toy(), images(), abort_early="sometimes", progress=False)


def test_an_item_stops_only_when_its_saved_8bit_image_succeeds():
    """Early stop judges what will be saved: a float success that rounding to 8 bits undoes (here a
    perturbation of 0.4 of a level everywhere, which rounds to nothing) does not end the item's run;
    one that survives rounding does. Without ``saved`` the float success alone stops it."""
    from fvis.attacks.base import success_stop
    from fvis.hooks import Activations

    class Gain(torch.nn.Module):  # logits (0, sum of the change from grey): class 1 wins on any brightening
        def forward(self, x):
            d = (x - 128 / 255).flatten(1).sum(1)
            return torch.stack([torch.zeros_like(d), d], 1)

    model = Gain()
    clean = torch.full((2, 3, 4, 4), 128 / 255)
    adv = clean.clone()
    adv[0] += 0.4 / 255  # rounds back to the clean image
    adv[1] += 0.6 / 255  # rounds up one level
    labels = torch.zeros(2, dtype=torch.long)  # untargeted: leave class 0
    acts = Activations({}, model(adv), batch=2)
    assert success_stop(labels, False)(acts, None).tolist() == [True, True]  # both succeed in float
    saved = (model, lambda: adv, clean, 8 / 255, "linf")
    assert success_stop(labels, False, saved=saved)(acts, None).tolist() == [False, True]
    # a forward over the unfinished items only: positions in the full batch come from acts.items
    acts = Activations({}, model(adv[1:]), batch=1, items=torch.tensor([1]), total=2)
    assert success_stop(labels, False, saved=saved)(acts, None).tolist() == [True]


def test_apgd_l2_early_stop_does_not_lose_what_rounding_undoes(lite0, coffee):
    """At a small L2 ball most of a spread-out perturbation rounds to zero; stopping on float success
    used to end runs whose 8-bit image then failed, so 10 steps fooled no more than 1."""
    x = torch.stack([coffee, coffee.flip(-1)])
    with torch.no_grad():
        y = lite0(x).argmax(1)
    stopped = apgd(lite0, x, labels=y, eps=0.25, norm="l2", steps=10, seed=0, progress=False)
    full = apgd(lite0, x, labels=y, eps=0.25, norm="l2", steps=10, early_stop=False, seed=0, progress=False)
    assert int(stopped.success.sum()) >= int(full.success.sum())
