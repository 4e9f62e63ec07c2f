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
from fvis.lm import LanguageModel, load_lm, random_gpt2  # noqa: E402
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
