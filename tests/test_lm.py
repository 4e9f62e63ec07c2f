"""Language models: snapping, vocabulary bans, honest evaluation, inversion on the real offline
SmolLM2-135M (loaded once), neuron objectives, the GPT-2 path (random weights, real tokenizer)."""
import json

import pytest
import torch

pytest.importorskip("transformers")

import objectives.language as lang  # noqa: E402
from fvis import cli  # noqa: E402
from fvis.errors import FvisError  # noqa: E402
from fvis.invert import (GCG, OneHotTokens, TokenEmbeddings, allowed_tokens, evaluate_prompt,  # noqa: E402
                         invert)
from fvis.lm import LanguageModel, load_lm, planted_targets, random_gpt2  # noqa: E402
from regularizers.snap import Snap, distance, nearest  # noqa: E402


@pytest.fixture(scope="module")
def smol():
    return load_lm("smollm2-135m")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A random 2-layer GPT2LMHeadModel + the real GPT-2 tokenizer, saved as a local model folder."""
    lm = random_gpt2(layers=2, dim=64, heads=2, seed=0)
    path = tmp_path_factory.mktemp("gpt2-random")
    lm.net.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def _state(lm):
    return ([m.training for m in lm.net.modules()], [p.requires_grad for p in lm.net.parameters()],
            sum(len(m._forward_hooks) for m in lm.net.modules()))


# -- snapping --------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_snap_zero_exactly_on_vocabulary_embeddings(smol, metric):
    table = smol.embedding.detach()
    ids = torch.tensor([[5, 1000, 40000], [123, 7, 30000]])
    x = table[ids].clone()
    snap = Snap(table, metric=metric, weight=2.0)
    assert torch.equal(table[nearest(x, table, metric=metric)], x)  # the row itself (or an identical one)
    assert torch.equal(snap.penalty(x, None), torch.zeros(2))  # exactly zero
    off = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert (snap.penalty(off, None) > 0).all()
    assert (distance(off, table[ids], metric) > 0).all()


def test_snap_schedule_and_allowed_mask(smol):
    table = smol.embedding.detach()
    allowed = torch.ones(table.shape[0], dtype=torch.bool)
    allowed[1000] = False
    x = table[torch.tensor([[1000]])].clone()
    assert int(nearest(x, table, allowed, "l2")) != 1000  # a banned row is never the snap target
    snap = Snap(table, allowed, metric="l2", weight=1.0, start_weight=0.0, ramp_steps=4)
    weights = []
    for _ in range(6):
        weights.append(snap.current_weight())
        snap.penalty(x.requires_grad_(), None)
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_projected_forward_is_exactly_real_tokens_and_gradient_reaches_continuous(smol):
    param = TokenEmbeddings(smol, length=3, restarts=2, seed=1)
    with torch.no_grad():
        param.embeddings.add_(0.01)
    x = param()
    assert torch.equal(x, smol.embedding[param.ids()])
    x.sum().backward()
    assert param.embeddings.grad is not None and param.embeddings.grad.abs().sum() > 0


# -- vocabulary and honest evaluation --------------------------------------------------------------
def test_banned_tokens(smol):
    allowed = allowed_tokens(smol, " Paris", ascii_only=True)
    texts = smol.token_texts()
    for bad in (" Paris", "Paris", " Par", "P", " paris", " Parisian"):
        ids = smol.encode(bad)
        if len(ids) == 1:
            assert not allowed[ids[0]], bad
    for sid in smol.tokenizer.all_special_ids:
        assert not allowed[sid]
    assert all(texts[i].isascii() for i in allowed.nonzero().flatten().tolist()[:2000])
    assert allowed[smol.encode(" London")[0]]


def test_roundtrip_check_catches_retokenization(smol):
    good = smol.encode(" the quick fox")
    assert evaluate_prompt(smol, good).roundtrip
    word = smol.encode(" understanding")
    assert len(word) == 1
    split = smol.encode(" under") + smol.encode("standing")  # same text, different tokens
    assert smol.decode(split) == " understanding"
    ev = evaluate_prompt(smol, split, target=smol.encode(" of"))
    assert not ev.roundtrip and ev.retokenized == word


def test_evaluate_prompt_metrics(smol):
    ev = evaluate_prompt(smol, smol.encode("The capital of France is"), smol.encode(" Paris"))
    assert ev.success and ev.rank == [1] and 0.05 < ev.p_target <= 1 and ev.greedy == " Paris"
    assert ev.perplexity is not None and ev.perplexity > 1 and not ev.contains_target


# -- inversion on SmolLM2 --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["embed", "gcg"])
def test_planted_target_found_and_bans_respected(smol, method):
    target = planted_targets(smol, 1, seed=3)[0]
    before = _state(smol)
    inv = invert(smol, target, method=method, length=3, steps=40, time_limit=40, seed=0, progress=False)
    assert _state(smol) == before  # modes, requires_grad and hooks as found
    best = inv.best
    assert best.success and best.roundtrip, (target, best)
    assert smol.decode(best.retokenized) == best.text
    allowed = allowed_tokens(smol, target)
    for r in inv.restarts:
        assert r.banned_tokens == [] and all(bool(allowed[i]) for i in r.ids)
    assert inv.stopped == "success" and inv.seconds_to_success is not None


def test_gcg_step_scores_candidates_and_keeps_one_hot(smol):
    target = smol.encode(" Paris")
    ctx = smol.with_context(smol.encode("The capital of France is"), [], tail=[], keep=1)
    allowed = allowed_tokens(smol, " Paris")
    param = OneHotTokens(smol, length=1, restarts=2, allowed=allowed, seed=0)
    import fvis
    from fvis.policies import PerItem

    res = fvis.optimize(ctx, lang.target_logprob(target), param, steps=2, progress=False, policies=[PerItem(keep_best=True)],
                        optimizer=lambda ps: GCG(ps, param, topk=16, candidates=8, seed=0))
    assert torch.equal(param.onehot.sum(-1), torch.ones(2, 1)) and set(param.onehot.unique().tolist()) == {0.0, 1.0}
    assert all(bool(allowed[i]) for i in param.ids().flatten().tolist())
    assert res.history["objective"][-1].max() >= res.history["objective"][0].max()


def test_neuron_objective_raises_the_neuron_on_the_discrete_prompt(smol):
    objective = lang.mlp_neuron(smol, 3, 100)
    inv = invert(smol, objective=objective, method="gcg", length=3, steps=5, candidates=24, seed=0, progress=False)
    assert inv.best.roundtrip and inv.best.value is not None
    assert inv.best.value > inv.baseline + 0.1, (inv.best.value, inv.baseline)
    # the reported value is the neuron measured on the re-tokenized real prompt
    ev = evaluate_prompt(smol, inv.best.ids, objective=objective)
    assert ev.value == pytest.approx(inv.best.value, abs=1e-4)


def test_neuron_specs_and_errors(smol):
    assert lang.parse_neuron(smol, "mlp.2:5").layers == {"model.layers.2.mlp.act_fn", "model.layers.2.mlp.up_proj"}
    assert lang.parse_neuron(smol, "resid.2:5").layers == {"model.layers.2"}
    with pytest.raises(FvisError, match="out of range"):
        lang.mlp_neuron(smol, 99, 0)
    with pytest.raises(FvisError, match="LAYER:INDEX"):
        lang.parse_neuron(smol, "mlp3")
    with pytest.raises(FvisError, match=r"name the kind of unit, mlp\.3:100 .* or resid\.3:100"):
        lang.parse_neuron(smol, "3:100")
    with pytest.raises(FvisError, match="unknown layer"):
        invert(smol, objective=lang.parse_neuron(smol, "model.layers.2.mlpp:3"), steps=1, progress=False)
    with pytest.raises(FvisError, match="out of range"):
        invert(smol, objective=lang.mlp_neuron(smol, 2, 10**6), steps=1, progress=False)


def test_bad_inputs_one_line_errors(smol, tmp_path, capsys):
    with pytest.raises(FvisError, match="empty"):
        invert(smol, "", progress=False)
    with pytest.raises(FvisError, match="length"):
        invert(smol, " Paris", length=0, progress=False)
    with pytest.raises(FvisError, match="no input embedding"):
        LanguageModel(torch.nn.Linear(2, 2), smol.tokenizer)
    with pytest.raises(FvisError, match="no such model|could not"):
        load_lm(str(tmp_path / "missing" / "model"))
    for argv in (["--target", " Paris", "--length", "0"], ["--neuron", "mlp.99:1"], ["--target", ""]):
        code = cli.main(["invert", "--model", "smollm2-135m", "--out", str(tmp_path / "o"), "--quiet", *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("fvis: error:") and "\n" not in err, err


# -- GPT-2 path ------------------------------------------------------------------------------------
def test_gpt2_path_end_to_end(gpt2_dir, tmp_path, capsys):
    lm = load_lm(str(gpt2_dir))
    assert type(lm.net).__name__ == "GPT2LMHeadModel" and lm.vocab_size == 50257
    assert lm.encode("Hello world") == [15496, 995]  # the real GPT-2 BPE
    inv = invert(lm, " hello world", method="gcg", length=2, restarts=2, steps=3, progress=False)
    assert len(inv.restarts) == 2 and inv.best.p_target is not None and len(inv.best.rank) == 2
    inv = invert(lm, " hello", method="embed", length=2, restarts=2, steps=3, snap="cosine", progress=False)
    assert all(r.banned_tokens == [] for r in inv.restarts)
    neuron = lang.parse_neuron(lm, "mlp.1:7", position="all")
    assert neuron.layers == {"transformer.h.1.mlp.act"}
    out = tmp_path / "inv"
    code = cli.main(["invert", "--model", str(gpt2_dir), "--target", " hello", "--length", "2", "--steps", "2",
                     "--method", "gcg", "--prefix", "Say:", "--quiet", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "result.json").read_text())
    assert data["settings"]["prefix"] == "Say:" and data["best"]["text"] and "roundtrip" in data["best"]
    assert "p(target)" in capsys.readouterr().out
    code = cli.main(["invert", "--model", str(gpt2_dir), "--neuron", "mlp.0:3", "--length", "2", "--steps", "2",
                     "--quiet", "--out", str(out)])
    assert code == 0 and json.loads((out / "result.json").read_text())["baseline"] is not None


def test_invert_settings_grouped_or_by_name_give_the_same_run(gpt2_dir, tmp_path, capsys):
    """invert()'s grouped settings (Prompt, Gcg/Embed, Budget) and single settings by name are the same
    run; each group checks its values when built, and the command builds them before loading a model."""
    from fvis.lm import Budget, Embed, Gcg, Prompt, search_method

    lm = load_lm(str(gpt2_dir))
    grouped = invert(lm, " hello", prompt=Prompt(length=2, prefix="Say:"), method=Gcg(topk=16, candidates=8),
                     budget=Budget(restarts=2, steps=2), seed=1, progress=False)
    named = invert(lm, " hello", length=2, prefix="Say:", method="gcg", topk=16, candidates=8, restarts=2, steps=2,
                   seed=1, progress=False)
    assert grouped.settings == named.settings and grouped.settings["topk"] == 16 and grouped.settings["length"] == 2
    assert [r.ids for r in grouped.restarts] == [r.ids for r in named.restarts]
    assert search_method("embed", lr=None, snap="cosine") == Embed(snap="cosine")
    for bad, message in [(lambda: Prompt(length=0), "length must be >= 1"),
                         (lambda: Budget(steps=0), "steps must be >= 1"),
                         (lambda: Embed(snap="l1"), "snap must be"),
                         (lambda: search_method("gcg", lr=3.0), "lr is not a setting of the gcg method"),
                         (lambda: search_method("gcc"), "Did you mean: gcg"),
                         (lambda: invert(lm, " hi", lenght=2), "no setting 'lenght'. Did you mean: length")]:
        with pytest.raises(FvisError, match=message):
            bad()
    code = cli.main(["invert", "--model", "no-such-model", "--target", " hi", "--method", "gcg", "--lr", "3",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "lr is not a setting of the gcg method" in err and err.count("\n") == 1


# -- many targets in one batch ---------------------------------------------------------------------
def test_per_item_target_objective_scores_each_item_against_its_own_target(smol):
    """A (B, n) target gives each row its own target, also for a subset of the batch (acts.rows)."""
    from fvis.hooks import Capture

    targets = [smol.encode(t) for t in (" house", " river", ",")]
    ids = torch.tensor([[5, 1000, 4000], [123, 7, 3000], [77, 888, 9999]])
    ctx = smol.with_context([], [], tail=[], keep=1)
    both = lang.target_logprob(torch.tensor(targets))
    with Capture(ctx, both.layers) as cap:
        acts = cap.forward(smol.embed(ids).float())
        per_item = both(acts)
        singles = torch.stack([lang.target_logprob(t)(acts)[i] for i, t in enumerate(targets)])
        sub = both(cap.forward(smol.embed(ids[[2, 0]]).float()).of(torch.tensor([2, 0]), 3))
    assert torch.allclose(per_item, singles) and torch.allclose(sub, singles[[2, 0]])
    assert len(set(per_item.tolist())) == 3


def test_planted_targets_found_inside_a_batch_of_others(smol, tmp_path, capsys):
    from fvis.lm import invert_many, planted_targets

    targets = planted_targets(smol, 3, seed=3)
    runs = invert_many(smol, targets, restarts=1, time_limit=45, progress=False)
    assert [r.settings["target"] for r in runs] == targets
    for r, t in zip(runs, targets):
        assert r.settings["target_ids"] == smol.encode(t) and r.settings["batch"] == 3
        again = evaluate_prompt(smol, r.best.ids, smol.encode(t))  # judged on its own target, real tokens
        assert again.p_target == pytest.approx(r.best.p_target, rel=1e-4) and again.success == r.best.success
    for r in runs:
        assert r.best.success and r.best.roundtrip and r.seconds_to_success is not None, r.best
    result = runs[0].result
    assert result.done.all() and result.stopped == "done"
    early = result.done_step < result.done_step.max()  # finished before the others: left the forward pass
    assert torch.isnan(result.history["objective"][-1, early]).all()
    assert torch.isfinite(result.history["objective"][-1, ~early]).all()


def test_targets_file_and_its_errors(smol, tmp_path, capsys):
    from fvis.lm import read_targets

    path = tmp_path / "targets.txt"
    path.write_text(" girl\n\n boy\n", encoding="utf-8")
    assert read_targets(path) == [" girl", " boy"]
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "twice.txt").write_text(" a\n a\n", encoding="utf-8")
    for argv, message in [(["--targets", str(tmp_path / "missing.txt")], "does not exist"),
                          (["--targets", str(tmp_path / "empty.txt")], "holds no target"),
                          (["--targets", str(tmp_path / "twice.txt")], "given twice"),
                          (["--target", " a", "--neuron", "mlp.1:2"], "not both"),
                          ([], "give --target")]:
        code = cli.main(["invert", "--model", "no-such-model", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_invert_command_with_many_targets(gpt2_dir, tmp_path, capsys):
    targets = tmp_path / "targets.txt"
    targets.write_text(" world\n hello there\n", encoding="utf-8")
    out = tmp_path / "many"
    code = cli.main(["invert", "--model", str(gpt2_dir), "--target", " hello", "--targets", str(targets), "--length", "2",
                     "--restarts", "2", "--steps", "2", "--quiet", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "result.json").read_text())["targets"]
    assert [d["settings"]["target"] for d in data] == [" hello", " world", " hello there"]
    assert [d["settings"]["batch"] for d in data] == [4, 4, 2]  # one-token targets share a batch
    assert all(len(d["restarts"]) == 2 for d in data)
    printed = capsys.readouterr().out
    assert "target ' world':" in printed and "/3 targets found" in printed


def test_defaults_finish_under_their_time_budget(gpt2_dir):
    """No step count given: the default budget (a million steps) ends on its time limit."""
    from fvis.lm import Budget

    lm = load_lm(str(gpt2_dir))
    assert Budget().steps >= 10**6 and Budget().time_limit == 60
    inv = invert(lm, " hello world", time_limit=4.0, progress=False)
    assert inv.stopped in ("time", "success") and 1 <= inv.steps < 10**6
    assert inv.seconds < 4.0 + 3.0, inv.seconds  # the limit counts set-up; only the final judging comes after


def test_neuron_report_cells_are_literal_markdown():
    """Corpus text in report.md cannot turn into links, emphasis, HTML or extra table cells."""
    from fvis.lm.neuron_report import _md
    assert _md("[--x 1] *a* _b_ <i> a|b `c`\nd") == "\\[--x 1\\] \\*a\\* \\_b\\_ \\<i\\> a\\|b 'c'\u23ced"


def test_snap_source_follows_the_unfinished_items_when_finished_ones_leave_the_batch():
    """Inversion snaps the projected embedding but penalizes the free one (``source``); a step over
    the unfinished items only must take those items' rows of the source, not fall back to the
    projected input (whose distance, and gradient, is exactly zero)."""
    from fvis.hooks import Activations
    g = torch.Generator().manual_seed(0)
    table = torch.randn(10, 4, generator=g)
    free = torch.randn(3, 2, 4, generator=g, requires_grad=True)  # the parameterization's 3 items
    snap = Snap(table, metric="l2", weight=1.0, source=lambda x: free)
    todo = torch.tensor([0, 2])
    projected = table[nearest(free.detach(), table, None, "l2")][todo]  # what param()[todo] gives
    acts = Activations({}, None, batch=2, items=todo, total=3)
    penalty = snap.penalty(projected, acts)
    assert torch.allclose(penalty, snap.distances(free[todo]).mean(-1)) and (penalty > 0).all()
    penalty.sum().backward()
    assert free.grad[todo].abs().sum() > 0 and free.grad[1].abs().sum() == 0
    with torch.no_grad():  # scoring candidates (search steps): the rows are the candidates themselves
        candidates = torch.randn(5, 2, 4, generator=g)
        scored = snap.penalty(candidates, Activations({}, None, batch=5, items=torch.tensor([0, 0, 2, 2, 2]), total=3))
    assert torch.allclose(scored, snap.distances(candidates).mean(-1))


def test_loading_bars_only_on_a_terminal(capfd, monkeypatch):
    """Loading SmolLM2 into a log (stderr not a terminal) prints no progress bars, and leaves
    transformers' own bar settings as they were."""
    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    capfd.readouterr()
    load_lm("smollm2-135m", cache=False)
    err = capfd.readouterr().err
    assert "Converting and de-quantizing" not in err and "Loading weights" not in err
    assert gguf_utils.tqdm is bar and transformers.utils.logging.is_progress_bar_enabled()
