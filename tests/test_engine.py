"""The optimize loop on the real EfficientNet-Lite0: it works, reproduces, and cleans up."""
import pytest
import torch

import fvis
import objectives as obj
import regularizers as reg
from fvis.render import render


def _hook_counts(model):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}


def test_class_logit_render_raises_target_probability(lite0):
    target = 94  # hummingbird
    image = fvis.FourierImage(128, seed=0)
    with torch.no_grad():
        before = lite0(image()).softmax(1)[0, target].item()
    result = fvis.optimize(lite0, obj.class_logit(target), image, [reg.TransformRobustness()],
                           steps=24, progress=False)
    with torch.no_grad():
        after = lite0(result.input).softmax(1)[0, target].item()
    assert before < 0.01
    assert after > 0.5, after  # chance is 0.001
    assert result.steps == 24 and result.stopped is None
    assert set(result.history) >= {"objective", "logit:94", "transforms"} - {"transforms"}
    assert result.history["objective"].shape == (24, 1)
    assert result.values.shape == (1,)
    # the reported final value is the objective on the final input, without transforms
    with torch.no_grad():
        assert torch.allclose(result.values, lite0(result.input)[:, target], rtol=1e-4, atol=1e-4)


def test_result_records_penalties_snapshots_and_timing(lite0):
    result = fvis.optimize(lite0, obj.channel("_blocks.2", 3), fvis.PixelImage(64, batch=2),
                           [reg.FrequencyPenalty(tv=0.25), reg.L1(0.05)], steps=6, thresholds=(2, 6),
                           progress=False, seed=3)
    assert set(result.history) == {"objective", "channel:_blocks.2:3", "frequency", "L1"}
    assert all(v.shape == (6, 2) for v in result.history.values())
    assert sorted(result.snapshots) == [2, 6]
    assert torch.equal(result.snapshots[6], result.input)
    assert result.seed == 3 and result.seconds >= result.loop_seconds > 0


def test_same_seed_same_bytes(lite0, tmp_path):
    from fvis.render import save_renders

    outs = []
    for run in range(2):
        result = render(lite0, [obj.channel("_blocks.4", 7), obj.class_logit(1)], size=64, steps=5,
                        seed=11, progress=False)
        save_renders(result, lite0, ["channel:_blocks.4:7", "logit:1"], tmp_path / str(run), {})
        outs.append(result.input)
    assert torch.equal(outs[0], outs[1])
    for name in ["channel__blocks.4_7.png", "logit_1.png"]:
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "1" / name).read_bytes()
    other = render(lite0, [obj.channel("_blocks.4", 7), obj.class_logit(1)], size=64, steps=5, seed=12,
                   progress=False)
    assert not torch.equal(other.input, outs[0])


def test_batched_objectives_render_independently(lite0):
    """Item i only feels objective i: rendering two objectives together equals rendering each alone
    (pixel parameterization, no transforms: every item is independent)."""
    a, b = obj.channel("_blocks.3", 1), obj.channel("_blocks.3", 2)
    init = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    together = fvis.optimize(lite0, obj.batched([a, b]), fvis.PixelImage(init=init, batch=2), steps=3,
                             progress=False, optimizer="sgd", lr=1.0)
    alone = fvis.optimize(lite0, a, fvis.PixelImage(init=init[:1]), steps=3, progress=False,
                          optimizer="sgd", lr=1.0)
    assert torch.allclose(together.input[:1], alone.input, atol=1e-5)
    assert together.values[0] == pytest.approx(alone.values[0].item(), rel=1e-4)


def test_nan_loss_stops_and_keeps_last_good_input(lite0):
    calls = {"n": 0}

    def fn(acts):
        calls["n"] += 1
        v = acts["_blocks.1"][:, 0].mean((1, 2))
        return v * float("nan") if calls["n"] >= 5 else v  # finite for steps 1-4

    image = fvis.PixelImage(32)
    with pytest.warns(UserWarning, match="non-finite"):
        result = fvis.optimize(lite0, obj.Objective(fn, ["_blocks.1"], "nan-at-step-5"), image,
                               steps=10, progress=False)
    assert result.stopped == "nan" and result.steps == 4
    assert torch.isfinite(result.input).all()
    assert torch.equal(result.input, image().detach())  # the param holds the last good state


def test_model_left_as_found_even_on_errors(lite0):
    model = lite0
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the forward below updates BN stats
    model.net._blocks[3].train()  # a mixed-mode model
    model.net._fc.weight.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    seen = []
    user_handle = model.net._blocks[5].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    user_pre = model.net._blocks[2].register_forward_pre_hook(lambda m, i: None)
    hooks_before = _hook_counts(model)
    try:
        for error in (RuntimeError("boom"), KeyboardInterrupt()):
            calls = {"n": 0}

            def fn(acts, error=error):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise error
                return acts["_blocks.5"].mean((1, 2, 3)) + acts["_blocks.2"].mean((1, 2, 3))

            with pytest.raises(type(error)):
                fvis.optimize(model, obj.Objective(fn, ["_blocks.5", "_blocks.2"]), fvis.PixelImage(32),
                              steps=5, progress=False)
            assert _hook_counts(model) == hooks_before
            assert {n: m.training for n, m in model.named_modules()} == modes
            assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        # the user's hook still fires after our runs
        seen.clear()
        with torch.no_grad():
            model(torch.rand(1, 3, 32, 32))
        assert len(seen) == 1
    finally:
        user_handle.remove()
        user_pre.remove()
        model.eval()
        model.net._fc.weight.requires_grad_(True)
        model.load_state_dict(state)  # the session's shared model stays pristine for later tests


def test_transforms_are_seeded_per_item_and_keep_size():
    t = reg.TransformRobustness()
    x = torch.rand(4, 3, 40, 56)
    a = t.transform(x, torch.Generator().manual_seed(5))
    b = t.transform(x, torch.Generator().manual_seed(5))
    c = t.transform(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a[0], a[1])  # per-item parameters differ
    big = reg.TransformRobustness(keep_size=False).transform(x, torch.Generator())
    assert big.shape[-2:] == (40 + 24 - 12, 56 + 24 - 12)
    # identity parameters reproduce the input exactly
    ident = reg.TransformRobustness(pad=0, jitter=0, scales=(1.0,), degrees=0, jitter_after=0)
    assert torch.allclose(ident.transform(x, torch.Generator()), x, atol=1e-5)


def test_frequency_penalty_prefers_smooth_images():
    smooth = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    noisy = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pen = reg.FrequencyPenalty(tv=1.0, high_freq=1.0)
    assert pen.penalty(smooth, None).item() < 0.05 < pen.penalty(noisy, None).item()
    assert reg.high_frequency_energy(noisy).item() > 0.5 > reg.high_frequency_energy(smooth).item()
    l1 = reg.L1(1.0).penalty(torch.full((2, 3, 4, 4), 0.75), None)
    assert torch.allclose(l1, torch.tensor([0.25, 0.25]))
