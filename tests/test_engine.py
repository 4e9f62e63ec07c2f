"""The optimize loop on the real EfficientNet-Lite0: it works, reproduces, and cleans up."""
import pytest
import torch

import fvis
import objectives as obj
import regularizers as reg
from fvis.policies import CaptureOptions, PerItem, ProgressBar, SkipFinalValues, Snapshots, TimeLimit
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


# step policies, each on its own, on a tiny network (fast) ----------------------------------------

def _toy():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    return fvis.wrap(net, input_size=16, class_names=["a", "b", "c"])


def test_per_item_stop_freezes_items_and_reports_when():
    calls = []

    def stop(acts, values):  # item 1 finishes at step 2
        calls.append(1)
        return torch.tensor([False, len(calls) >= 2])

    result = fvis.optimize(_toy(), obj.channel("0", 1), fvis.PixelImage(16, batch=2), steps=5, progress=False,
                           thresholds=range(1, 6), policies=[PerItem(stop)])
    assert result.done.tolist() == [False, True] and result.done_step.tolist() == [5, 2]
    frames = [result.snapshots[t][1] for t in range(1, 6)]
    assert all(torch.equal(f, frames[0]) for f in frames) and torch.equal(result.input[1], frames[0])
    assert result.stopped is None and result.steps == 5


def test_per_item_stop_for_every_item_ends_the_run():
    result = fvis.optimize(_toy(), obj.channel("0", 1), fvis.PixelImage(16, batch=2), steps=5, progress=False,
                           policies=[PerItem(lambda acts, values: torch.ones(2, dtype=torch.bool))])
    assert result.stopped == "done" and result.steps == 0 and result.done.all()


class _Shared(torch.nn.Module):
    """Two items from one shared parameter (not batch-first)."""

    def __init__(self):
        super().__init__()
        self.raw = torch.nn.Parameter(torch.zeros(3, 16, 16))

    def forward(self):
        return torch.sigmoid(self.raw).expand(2, 3, 16, 16)

    def after_step(self):
        pass


def test_per_item_needs_batch_first_parameters():
    with pytest.raises(fvis.FvisError, match="batch-first"):
        fvis.optimize(_toy(), obj.channel("0", 1), _Shared(), steps=2, progress=False,
                      policies=[PerItem(keep_best=True)])


def test_snapshots_are_copies_at_the_given_steps():
    image = fvis.PixelImage(16)
    result = fvis.optimize(_toy(), obj.channel("0", 1), image, steps=4, progress=False,
                           policies=[Snapshots([2, 4, 9])])
    assert sorted(result.snapshots) == [2, 4] and torch.equal(result.snapshots[4], result.input)
    assert not torch.equal(result.snapshots[2], result.snapshots[4])


def test_time_limit_stops_before_a_step_that_would_overrun():
    clock = iter(range(100))  # each reading one "second" later
    result = fvis.optimize(_toy(), obj.channel("0", 1), fvis.PixelImage(16), steps=50, progress=False,
                           policies=[TimeLimit(5, clock=lambda: next(clock))])
    # readings 0 (start), 1, 2, ...: after step n, n s elapsed at 1 s/step; step n + 1 would end at n + 1 > 5 for n = 5
    assert result.stopped == "time" and result.steps == 5
    with pytest.raises(fvis.FvisError, match="time limit"):
        TimeLimit(0)


def test_progress_bar_counts_completed_steps_only():
    bar = ProgressBar(disable=False)
    result = fvis.optimize(_toy(), obj.channel("0", 1), fvis.PixelImage(16), steps=6, progress=False,
                           policies=[bar, TimeLimit(3, clock=iter(range(100)).__next__)])
    assert bar.bar.n == result.steps == 3  # the bar and the result agree


def test_capture_options_set_layout_and_truncation(monkeypatch):
    from fvis.hooks import Capture

    seen = []
    init = Capture.__init__
    monkeypatch.setattr(Capture, "__init__", lambda self, *a, **k: (seen.append(k), init(self, *a, **k))[1])
    fvis.optimize(_toy(), obj.channel("0", 1), fvis.PixelImage(16), steps=1, progress=False,
                  policies=[CaptureOptions(channels_last=False, truncate=False)])
    assert seen == [{"channels_last": False, "truncate": False, "precision": "fp32", "compile": False, "fold": False,
                     "grad_filters": {}}]  # no regularizer filters a gradient here


def test_skip_final_values():
    model, objective = _toy(), obj.channel("0", 1)
    assert fvis.optimize(model, objective, fvis.PixelImage(16), steps=2, progress=False,
                         policies=[SkipFinalValues()]).values is None
    kept = fvis.optimize(model, objective, fvis.PixelImage(16, batch=2), steps=2, progress=False,
                         policies=[SkipFinalValues(), PerItem(keep_best=True)])  # keep_best must measure
    assert kept.values.shape == (2,)


def test_search_optimizers_meet_the_protocol():
    from fvis.invert import GCG, SnapSearch
    from fvis.optim import SearchOptimizer

    params = [torch.zeros(1, requires_grad=True)]
    assert isinstance(GCG(params, param=None), SearchOptimizer)
    assert isinstance(SnapSearch(params, param=None, lr=0.1), SearchOptimizer)
    assert not isinstance(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), SearchOptimizer)
