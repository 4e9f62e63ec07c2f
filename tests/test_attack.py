"""Adversarial examples on the engine: exact norm bounds, honest (quantized) success, early stop."""
import json
import os

import pytest
import torch
from PIL import Image

import fvis
import objectives as obj
import regularizers as reg
from fvis.attack import attack, quantize, save_attack
from fvis.cli import main
from fvis.policies import PerItem, SkipFinalValues
from fvis.files import load_image
from fvis.optim import SteepestDescent
from fvis.param import Perturbation

GOLDFINCH = 11


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_keeps_ball_and_box_exactly(norm):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 20, 24, generator=g)
    image[0] = 1.0  # a saturated image: the box must bind
    eps = 0.03 if norm == "linf" else 0.5
    p = Perturbation(image, eps, norm, random_start=True, seed=3)
    with torch.no_grad():
        p.adv.add_(torch.randn(p.adv.shape, generator=g))  # a wild step far outside the ball
    p.after_step()
    x, d = p(), p.delta.detach().flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-6).all() and size.max() > 0.5 * eps
    assert x.min() >= 0 and x.max() <= 1
    q = quantize((image * 255).round() / 255, x.detach(), eps, norm)
    assert torch.equal(q, (q * 255).round() / 255)  # 8-bit exact
    dq = (q - (image * 255).round() / 255).flatten(1)
    size_q = dq.abs().amax(1) if norm == "linf" else dq.norm(dim=1)
    assert (size_q <= eps + 1e-6).all()  # the bound survives quantization (eps not a multiple of 1/255)


def test_steepest_descent_steps():
    p = torch.nn.Parameter(torch.zeros(2, 3))
    p.grad = torch.tensor([[3.0, -4.0, 0.0], [0.0, 0.0, 2.0]])
    SteepestDescent([p], lr=0.1, norm="linf").step()
    assert torch.allclose(p.data, torch.tensor([[-0.1, 0.1, 0.0], [0.0, 0.0, -0.1]]))
    p.data.zero_()
    SteepestDescent([p], lr=0.1, norm="l2").step()
    assert torch.allclose(p.data.norm(dim=1), torch.tensor([0.1, 0.1]))
    assert torch.allclose(p.data[0], torch.tensor([-0.06, 0.08, 0.0]))


def test_targeted_attack_succeeds_on_saved_png_and_normalizes_once(lite0, coffee, tmp_path):
    result = attack(lite0, coffee[None], target=GOLDFINCH, eps=8 / 255, steps=10, progress=False)
    assert result.success.all()
    assert float(result.linf[0]) <= 8 / 255 + 1e-7
    save_attack(lite0, result, ["coffee"], tmp_path)
    saved = load_image(tmp_path / "coffee_adv.png")
    assert torch.equal(saved, result.adversarial[0])  # what was judged is exactly what was saved
    # normalization exactly once: the raw net on (x - mean) / std reproduces the reported probability
    with torch.no_grad():
        logits = lite0.net((saved[None] - lite0.mean) / lite0.std)
    assert logits.argmax(1).item() == GOLDFINCH
    assert logits.softmax(1)[0, GOLDFINCH].item() == pytest.approx(float(result.prob[0]), abs=1e-5)
    # ... and the perturbation lives in pixel space, not in normalized space
    assert (saved - result.clean[0]).abs().max() <= 8 / 255 + 1e-7
    meta = json.loads((tmp_path / "coffee.json").read_text())
    assert meta["success"] and meta["target"]["name"] == "goldfinch"
    assert meta["clean_top5"][0]["name"] == "espresso" and meta["adversarial_top5"][0]["name"] == "goldfinch"
    assert meta["linf_255"] <= 8 + 1e-4 and "8-bit" in meta["success_judged_on"]


def test_early_stopped_items_stop_changing(lite0, coffee):
    images = torch.stack([coffee, coffee.flip(-1)])[..., :96, :96].contiguous()
    param = Perturbation(images, 8 / 255, "linf")
    label = lite0(images).argmax(1)
    calls = []

    def stop(acts, values):  # item 0 finishes at step 3, item 1 never
        calls.append(1)
        return torch.tensor([len(calls) >= 3, False])

    result = fvis.optimize(lite0, obj.untargeted(label), param, steps=8, lr=1 / 255,
                           optimizer=lambda ps: SteepestDescent(ps, lr=1 / 255), policies=[PerItem(stop)],
                           thresholds=range(1, 9), progress=False)
    frames = [result.snapshots[t] for t in sorted(result.snapshots)]
    assert result.done.tolist() == [True, False] and result.done_step.tolist() == [3, 8]
    frozen = frames[2][0]  # the input item 0 had when it finished (after steps 1 and 2)
    assert all(torch.equal(f[0], frozen) for f in frames[2:]) and torch.equal(result.input[0], frozen)
    assert not torch.equal(frames[1][0], frames[0][0])  # it moved before it finished
    assert not torch.equal(frames[-1][1], frames[2][1])  # the other item kept going


def test_skip_done_forwards_only_unfinished_items(lite0, coffee):
    images = torch.stack([coffee, coffee.flip(-1), coffee.flip(-2)])[..., :64, :64].contiguous()
    param = Perturbation(images, 8 / 255, "linf")
    with torch.no_grad():
        labels = lite0(images).argmax(1)
    assert len(set(labels.tolist())) > 1  # per-item classes: a wrong item mapping would show
    rows, calls = [], []
    handle = lite0.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))

    def stop(acts, values):  # item 1 finishes at step 2; the others never
        calls.append(acts.items)
        items = torch.arange(3) if acts.items is None else acts.items.cpu()
        return (items == 1) & (len(calls) >= 2)

    try:
        result = fvis.optimize(lite0, obj.untargeted(labels), param, steps=4,
                               optimizer=lambda ps: SteepestDescent(ps, lr=1 / 255),
                               policies=[PerItem(stop, skip_done=True), SkipFinalValues()],
                               thresholds=range(1, 5), progress=False)
    finally:
        handle.remove()
    assert rows == [1, 3, 3, 2, 2]  # dry run on one item, then 3 items until item 1 is done
    assert calls[2].tolist() == [0, 2]
    assert result.done.tolist() == [False, True, False]
    history = result.history["objective"]
    assert torch.isnan(history[2:, 1]).all() and not torch.isnan(history[:, [0, 2]]).any()
    with torch.no_grad():  # step 3 scored the input after step 2, each item against its own label
        expected = lite0(result.snapshots[2]).log_softmax(1).gather(1, labels[:, None])[:, 0].neg()
    assert torch.allclose(history[2, [0, 2]], expected[[0, 2]], atol=1e-4)
    assert torch.equal(result.input[1], result.snapshots[1][1])  # frozen where it finished


class _Scripted(torch.optim.Optimizer):
    """Moves the parameter along a fixed path, one point per step."""

    def __init__(self, params, path):
        super().__init__(params, {})
        self.path = iter(path)

    @torch.no_grad()
    def step(self, closure=None):
        self.param_groups[0]["params"][0].copy_(next(self.path))


def test_keep_best_returns_the_best_iterate(lite0, coffee):
    g = torch.Generator().manual_seed(0)
    path = [torch.randn(2, 3, 64, 64, generator=g) * 3 for _ in range(5)]  # the inputs of steps 2..6
    param = fvis.PixelImage(init=coffee[None, :, :64, :64], batch=2)
    start = param.raw.detach().clone()
    result = fvis.optimize(lite0, obj.class_logit(GOLDFINCH), param, steps=5, optimizer=lambda ps: _Scripted(ps, path),
                           policies=[PerItem(keep_best=True)], progress=False)
    candidates = torch.stack([start] + path)  # every iterate, the final one included
    with torch.no_grad():
        scores = torch.stack([lite0(torch.sigmoid(c))[:, GOLDFINCH] for c in candidates])  # (6, B)
    best = scores.argmax(0)
    assert torch.allclose(result.values, scores.max(0).values, atol=1e-4)
    for i in range(2):
        assert torch.allclose(result.input[i], torch.sigmoid(candidates[best[i], i]), atol=1e-6)
    assert set(best.tolist()) != {5}  # not vacuous: the last iterate is not the best for every item


def test_eot_copies_are_averaged_per_item(lite0, coffee):
    """Each item's objective is the mean of its own copies' values (not their sum, not one copy)."""
    raw = []

    def logit(acts):
        raw.append(acts["output"][:, GOLDFINCH].detach().clone())
        return acts["output"][:, GOLDFINCH]

    param = Perturbation(coffee[None, :, :64, :64], 4 / 255, batch=2)
    result = fvis.optimize(lite0, obj.Objective(logit, ["output"], "goldfinch"), param,
                           [reg.TransformRobustness(copies=3)], steps=1, lr=1 / 255, progress=False,
                           optimizer=lambda ps: SteepestDescent(ps, lr=1 / 255))
    step = next(r for r in raw if r.shape == (6,))  # the step's forward: 2 items x 3 copies, item-major
    assert step.view(2, 3).std(1).min() > 0  # the copies differ, so mean, sum and one copy all differ
    torch.testing.assert_close(result.history["objective"][0], step.view(2, 3).mean(1))
    assert result.history["objective"].shape == (1, 2) and result.values.shape == (2,)


@pytest.mark.parametrize("method,norm,eps", [("mifgsm", "linf", 4 / 255), ("adam", "l2", 1.0)])
def test_other_methods_and_restarts(lite0, coffee, method, norm, eps):
    x = coffee[None, :, :96, :96]
    result = attack(lite0, x, eps=eps, norm=norm, method=method, steps=4, restarts=2, progress=False)
    limit = result.linf if norm == "linf" else result.l2
    assert (limit <= eps + 1e-6).all() and result.success.all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1


def test_attack_cli_writes_everything_and_rejects_bad_input(tmp_path, capsys, coffee):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((coffee.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / "cup.png")
    out = tmp_path / "out"
    assert main(["attack", "--model", "efficientnet-lite0", "--images", str(folder), "--untargeted",
                 "--eps", "4/255", "--steps", "5", "--heldout", "4", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "success 1/1" in printed and "judged on the saved" in printed
    umask = os.umask(0)
    os.umask(umask)
    for suffix in ("_adv.png", "_delta.png", "_compare.png", ".json"):
        assert (out / f"cup{suffix}").is_file()
        assert (out / f"cup{suffix}").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and summary["median_linf_255"] <= 4 + 1e-4
    assert 0 <= summary["heldout_success_mean"] <= 1

    Image.new("RGB", (20, 40)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    bad = [
        (["--image", str(folder / "cup.png"), "--target", "goldfinh"], "Did you mean: goldfinch"),
        (["--image", str(tmp_path / "tiny.png"), "--untargeted"], "too small"),
        (["--image", str(tmp_path / "broken.jpg"), "--untargeted"], "cannot read image"),
    ]
    for args, message in bad:
        assert main(["attack", "--model", "efficientnet-lite0", *args, "--quiet", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["attack", "--model", "efficientnet-lite0", "--image", str(folder / "cup.png"), "--untargeted",
              "--eps", "0", "--out", str(out)])
    assert e.value.code == 2 and "must be > 0" in capsys.readouterr().err
