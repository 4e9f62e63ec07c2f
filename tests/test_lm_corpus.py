"""Corpus top-k for language-model neurons: batched, padded, cached activations equal a brute-force
scan (one forward per token position); the report escapes HTML; bad inputs give one line, exit 2."""
import json

import pytest
import torch

pytest.importorskip("transformers")

import objectives.language as lang  # noqa: E402
from fvis import cli  # noqa: E402
from fvis.errors import FvisError  # noqa: E402
from fvis.hooks import Capture  # noqa: E402
from fvis.lm import corpus_topk, neuron_activations, random_gpt2, read_corpus, write_report  # noqa: E402

TEXTS = {"a.txt": "The cat sat on the mat. <script>alert('x')</script> Cats & dogs are friends, said the vet.",
         "sub/b.md": "Paris is the capital of France. Berlin is the capital of Germany. Rome is old.",
         "skip.bin": "not text"}


@pytest.fixture(scope="module")
def tiny():
    return random_gpt2(layers=2, dim=64, heads=2, seed=0)


@pytest.fixture
def corpus(tmp_path):
    for name, text in TEXTS.items():
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "corpus" / name).write_text(text, encoding="utf-8")
    return tmp_path / "corpus"


@torch.no_grad()
def _brute(lm, spec, docs, window):
    """Every token position alone: the model on its window up to it, the neuron at the last position."""
    neuron = lang.parse_neuron(lm, spec, position="last")
    ctx = lm.with_context([], [], tail=[], keep=1)
    values = []
    with Capture(ctx, neuron.layers) as cap:
        for _, text in docs:
            ids = lm.encode(text)
            for i in range(len(ids)):
                start = i - i % window
                values.append(float(neuron(cap.forward(lm.embed(ids[start:i + 1])[None].float()))[0]))
    return torch.tensor(values)


def test_corpus_topk_equals_a_brute_force_scan(tiny, corpus, tmp_path):
    docs = read_corpus(corpus)
    assert [p.name for p, _ in docs] == ["a.txt", "b.md"]  # .bin skipped, sub-folders read, sorted
    acts = neuron_activations(tiny, "mlp.1:7", docs, window=8, batch_size=3, cache=tmp_path / "cache")
    brute = _brute(tiny, "mlp.1:7", docs, window=8)
    assert not acts["cached"] and acts["values"].shape == brute.shape
    assert torch.allclose(acts["values"], brute, atol=1e-5)
    top = corpus_topk(tiny, "mlp.1:7", corpus, k=5, context=3, window=8, batch_size=3, cache=tmp_path / "cache")
    assert top["cached"]  # same model, neuron, window and texts: read back
    assert [round(s.value, 4) for s in top["snippets"]] == [round(v, 4) for v in brute.topk(5).values.tolist()]
    s = top["snippets"][0]
    ids = tiny.encode(dict(docs)[next(p for p, _ in docs if str(p) == s.doc)])
    assert s.token == tiny.decode([ids[s.pos]]) and s.before == tiny.decode(ids[max(0, s.pos - 3):s.pos])
    other = neuron_activations(tiny, "mlp.1:8", docs, window=8, batch_size=3, cache=tmp_path / "cache")
    assert not other["cached"]  # another neuron: another key


def test_report_escapes_html_and_marks_the_token(tiny, corpus, tmp_path):
    top = corpus_topk(tiny, "resid.0:3", corpus, k=40, context=30, window=64, cache=False)
    prompts = {"settings": {"method": "embed", "length": 3, "objective": "mlp:0:3@last", "target": None},
               "restarts": [{"text": "<b>hi</b>", "value": 1.5, "roundtrip": True}], "baseline": 0.1}
    write_report(top, tmp_path / "r", prompts)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert page.count("<mark>") == len(top["snippets"])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Optimized prompts" in md and md.count("**«") == len(top["snippets"])
    assert len(json.loads((tmp_path / "r" / "topk.json").read_text())["snippets"]) == len(top["snippets"])


def test_lm_topk_command_and_its_errors(tiny, corpus, tmp_path, capsys):
    model = tmp_path / "gpt2"
    tiny.net.save_pretrained(model)
    tiny.tokenizer.save_pretrained(model)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("  \n")
    capsys.readouterr()
    base = ["lm-topk", "--model", str(model), "--out", str(tmp_path / "o"), "--quiet", "--no-cache"]
    for argv, message in [(["--neuron", "mlp.1:7", "--corpus", str(tmp_path / "empty")], "holds no text"),
                          (["--neuron", "mlp.1:7", "--corpus", str(tmp_path / "none")], "does not exist"),
                          (["--neuron", "mlp.1:100000", "--corpus", str(corpus)], "out of range"),
                          (["--neuron", "mlp.9:1", "--corpus", str(corpus)], "out of range"),
                          (["--neuron", "mlp.1:7", "--corpus", str(corpus), "--prompts", str(tmp_path)], "no invert result")]:
        code = cli.main([*base, *argv])
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the library's loading bar, if any
        assert code == 2 and err.startswith("fvis: error:") and message in err, err
    inv = tmp_path / "inv"
    assert cli.main(["invert", "--model", str(model), "--neuron", "mlp.1:7", "--length", "2", "--steps", "2",
                     "--quiet", "--out", str(inv)]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--neuron", "mlp.1:7", "--corpus", str(corpus), "-k", "4", "--prompts", str(inv)]) == 0
    assert "top 4 of" in capsys.readouterr().out
    assert "Optimized prompts" in (tmp_path / "o" / "report.md").read_text()
    with pytest.raises(FvisError, match="window"):
        neuron_activations(tiny, "mlp.1:7", read_corpus(corpus), window=1)
