"""Language-model studies: log-odds ranking (Monroe et al. 2008) against a hand computation, the
study's files from collected prompts, resuming, and the command's errors."""
import json
import math
from collections import Counter

import pytest

pytest.importorskip("transformers")

from fvis import cli  # noqa: E402
from fvis.errors import FvisError  # noqa: E402
from fvis.lm import Study, collect, log_odds, random_gpt2, token_table, write_study  # noqa: E402


def test_log_odds_equals_a_hand_computation():
    # a: x 3, y 1 (n = 4); b: x 1, y 3 (n = 4); prior 4 on the pooled shares (x 1/2, y 1/2): alpha 2 each
    ranked = log_odds({"x": 3, "y": 1}, {"x": 1, "y": 3}, prior=4.0)
    assert [r.token for r in ranked] == ["x", "y"]
    x = ranked[0]
    # delta = log((3+2)/(4+4-3-2)) - log((1+2)/(4+4-1-2)) = log(5/3) - log(3/5); var = 1/5 + 1/3
    assert x.alpha == pytest.approx(2.0)
    assert x.delta == pytest.approx(2 * math.log(5 / 3))
    assert x.variance == pytest.approx(1 / 5 + 1 / 3)
    assert x.z == pytest.approx(1.0216512475319814 / math.sqrt(0.5333333333333333))
    assert ranked[1].z == pytest.approx(-x.z)
    # unequal sizes and an informative background: alpha_w = prior * background share
    r = {t.token: t for t in log_odds({"a": 5, "b": 1}, {"a": 2, "c": 4}, prior=10.0,
                                      background={"a": 6, "b": 2, "c": 2})}
    a = 10 * 6 / 10
    assert r["a"].delta == pytest.approx(math.log((5 + a) / (6 + 10 - 5 - a)) - math.log((2 + a) / (6 + 10 - 2 - a)))
    assert r["c"].z < 0 < r["b"].z
    with pytest.raises(FvisError, match="prior"):
        log_odds({"x": 1}, {"x": 1}, prior=0)


def test_log_odds_does_not_let_common_tokens_dominate():
    """A token frequent in both sets ranks below a rarer token found only in the studied set."""
    ranked = log_odds({"the": 40, "girl": 6, "x": 1}, {"the": 40, "boy": 6, "y": 1}, prior=50.0)
    assert ranked[0].token == "girl" and ranked[-1].token == "boy"
    assert abs(next(r for r in ranked if r.token == "the").z) < 1e-9


@pytest.fixture(scope="module")
def tiny():
    return random_gpt2(layers=2, dim=64, heads=2, seed=0)


def _study(lm):
    prompts = {" girl": [" she pretty dress", " she pink dress"], " boy": [" he blue truck", " he plays truck"]}
    recs = {t: [{"target": t, "text": p, "ids": lm.encode(p), "p_target": 0.5, "round": 0, "length": 3} for p in ps]
            for t, ps in prompts.items()}
    return Study(list(prompts), recs, {"length": 3, "seed": 0}, 1, 1.0)


def test_study_files_rank_tokens_against_the_other_targets(tiny, tmp_path):
    study = _study(tiny)
    paths = write_study(tiny, study, tmp_path, prior=10.0)
    assert {p.name for p in paths} >= {"tokens.csv", "tokens.json", "tokens_0.png", "tokens_1.png", "compare.png"}
    data = json.loads((tmp_path / "tokens.json").read_text())
    girl = data["targets"][" girl"]
    assert girl["prompts"] == 2 and girl["tokens"] == sum(len(p["ids"]) for p in study.prompts[" girl"])
    top = girl["ranked"][0]
    assert top["token"] == " dress" and top["count"] == 2 and top["baseline_count"] == 0
    # the values are log_odds of these counts against the other target's counts
    expect = log_odds(study.counts(" girl"), study.counts(" boy"), prior=10.0)[0]
    assert top["z"] == pytest.approx(expect.z) and top["token_id"] == expect.token
    lines = (tmp_path / "tokens.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("target,rank,token_id,token,count") and len(lines) == 1 + sum(
        len(e["ranked"]) for e in data["targets"].values())
    one = token_table(tiny, Study([" girl"], {" girl": study.prompts[" girl"]}, {"length": 3}), random_prompts=50)
    assert one[" girl"]["baseline"] == "50 random prompts" and one[" girl"]["baseline_tokens"] == 150


def test_study_resumes_from_its_prompts_file(tiny, tmp_path):
    study = _study(tiny)
    with (tmp_path / "prompts.jsonl").open("w") as f:
        for recs in study.prompts.values():
            f.writelines(json.dumps(r) + "\n" for r in recs)
    again = collect(tiny, [" girl", " boy"], prompts=2, out=tmp_path, progress=False, time_limit=5)
    assert again.prompts == study.prompts and again.rounds == 1  # nothing redone
    assert Counter(again.counts(" boy"))[tiny.encode(" truck")[0]] == 2


def test_lm_study_bad_inputs_one_line_errors(tmp_path, capsys):
    for argv, message in [([], "give --target"), (["--target", " a", "--compare", " a", " b"], "both must be targets"),
                          (["--target", " a", "--prior", "0"], "--prior must be > 0"),
                          (["--targets", str(tmp_path / "none.txt")], "does not exist")]:
        code = cli.main(["lm-study", "--model", "no-such-model", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_harvest_restarts_items_and_collects_distinct_real_prompts(tiny):
    """Harvest mode: more successful prompts per target than restarts (items start again after a
    success), all distinct, each judged again on its re-tokenized text, each reported at once."""
    from fvis.lm import invert_many, planted_targets

    targets = [t for i, t in enumerate(planted_targets(tiny, 3, seed=1)) if i != 1]
    seen = []
    runs = invert_many(tiny, targets, restarts=2, harvest={t: 3 for t in targets}, steps=400, time_limit=None,
                       on_found=lambda t, ids: seen.append((t, tuple(ids))), progress=False)
    for t, r in zip(targets, runs):
        assert len(r.harvested) == 3 > r.settings["restarts"]
        assert all(e.success and e.roundtrip for e in r.harvested)
        assert len({e.text for e in r.harvested}) == 3
        assert sorted(tuple(e.ids) for e in r.harvested) == sorted(ids for s, ids in seen if s == t)
    assert runs[0].result.stopped == "done"


def test_resume_counts_only_successes_of_this_study_and_keeps_the_rest_of_the_file(tiny, tmp_path):
    """A prompt that failed its second judging does not count (nor is it found again); an unjudged
    record (the run stopped before judging it) is judged on resume; records of another model and a
    half-written last line are skipped with one warning; a rewrite of the file keeps other studies' lines."""
    study = _study(tiny)
    log = tmp_path / "prompts.jsonl"
    failed = {"target": " boy", "text": " he sad truck", "ids": tiny.encode(" he sad truck"), "round": 0,
              "length": 3, "p_target": 0.01, "success": False}
    unjudged = {"target": " girl", "text": " she big hat", "ids": tiny.encode(" she big hat"), "round": 0, "length": 3}
    other = {"target": " girl", "text": " x y z", "ids": tiny.encode(" x y z"), "round": 0, "length": 3,
             "model": "another-model", "success": True}
    lines = [json.dumps(r) for recs in study.prompts.values() for r in recs]
    lines += [json.dumps(failed), json.dumps(unjudged), json.dumps(other), '{"target": " girl", "te']
    log.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable line.* and 1 record"):
        again = collect(tiny, [" girl", " boy"], prompts=2, out=tmp_path, progress=False, time_limit=5)
    texts = {t: [r["text"] for r in recs] for t, recs in again.prompts.items()}
    assert texts[" boy"] == [" he blue truck", " he plays truck"]  # the failed one is not a success
    assert texts[" girl"][:2] == [" she pretty dress", " she pink dress"] and " x y z" not in texts[" girl"]
    with pytest.warns(UserWarning):  # one more wanted: a round runs and the file is rewritten with the verdicts
        more = collect(tiny, [" girl", " boy"], prompts=3, out=tmp_path, progress=False, time_limit=5)
    assert more.rounds >= 2  # a new round ran (a second one when a round ends without the prompt it needed)
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert json.dumps(other) in log.read_text().splitlines()  # another model's record, untouched
    judged = {r["text"]: r for r in kept}
    assert judged[" he sad truck"]["success"] is False and isinstance(judged[" she big hat"]["success"], bool)
    assert all("te" != r.get("target") for r in kept) and len(kept) == len({(r["target"], r["text"]) for r in kept})


def test_a_shared_time_limit_covers_every_prefix_group(tiny, monkeypatch):
    """Targets of several tokens with different prefixes run as batches one after another; with
    ``shared_time_limit`` (as lm-study uses it) each later batch gets what the earlier ones left,
    without it each gets the whole limit."""
    from fvis.lm import inversion

    targets = [" New York", " Los Angeles"]
    assert tiny.encode(targets[0])[:-1] != tiny.encode(targets[1])[:-1]  # two groups
    limits, optimize = [], inversion._optimize

    def spy(lm, ctx, objective, prompt, budget, *rest):
        limits.append(budget.time_limit)
        return optimize(lm, ctx, objective, prompt, budget, *rest)

    monkeypatch.setattr(inversion, "_optimize", spy)
    for shared in (False, True):
        inversion.invert_many(tiny, targets, restarts=1, steps=2, time_limit=30.0, shared_time_limit=shared,
                              progress=False)
    assert limits[:3] == [30.0, 30.0, 30.0] and limits[3] < 30.0
