"""fvis sweep: a TOML list of jobs into a run folder; resumable after a kill; split across torchrun ranks."""
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import fvis.sweep
from fvis.cli import main

CONFIG = """\
out = "run"
steps = 2
size = 64
batch = 2

[[job]]
kind = "channel"
model = "efficientnet-lite0"
layer = "_blocks.2"
channels = "0-2"

[[job]]
kind = "logit"
model = "efficientnet-lite0"
classes = ["hummingbird"]
"""
PROTOTYPE_JOB = """
[[job]]
kind = "prototype"
model = "efficientnet-lite0"
classes = [1]
per_class = 1
match = "none"
init = "random"
heldout = 0
"""
CHANNEL = "00_channel_efficientnet-lite0__blocks.2"
ITEMS = [f"{CHANNEL}/channel__blocks.2_{c}" for c in range(3)] + ["01_logit_efficientnet-lite0/logit_94_hummingbird"]


_load = functools.lru_cache(fvis.sweep.load)


@pytest.fixture(autouse=True)
def shared_models(monkeypatch):
    """Each model loaded once for the whole module (real weights; renders leave them unchanged)."""
    monkeypatch.setattr(fvis.sweep, "load", lambda name, device="cpu": _load(name, device=device))


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def renders(monkeypatch):
    """Counts render() calls of the sweep (the objectives of each call)."""
    calls = []
    real = fvis.sweep.render

    def counting(model, objs, **kw):
        calls.append([o.name for o in objs])
        return real(model, objs, **kw)

    monkeypatch.setattr(fvis.sweep, "render", counting)
    return calls


def sweep(capsys, *argv):
    code = main(["sweep", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def logged(run: Path) -> list[str]:
    return [line.split("\t")[1] for f in sorted((run / "logs").glob("rank*.log")) for line in f.read_text().splitlines()]


def temp_files(run: Path) -> list[Path]:
    return list(run.rglob("*.tmp"))


def test_sweep_writes_items_and_index(config, capsys, tmp_path):
    config.write_text(CONFIG + PROTOTYPE_JOB)
    code, out, err = sweep(capsys, config)
    assert code == 0, err
    run = tmp_path / "run"
    assert "0 done, 5 to do" in out
    index = json.loads((run / "index.json").read_text())
    items = ITEMS + ["02_prototype_efficientnet-lite0/1_goldfish"]
    assert [f"{r['folder']}/{r['stem']}" for r in index["items"]] == items
    assert index["done"] == index["total"] == 5 and {r["status"] for r in index["items"]} == {"done"}
    for r in index["items"]:
        assert Image.open(run / r["paths"][0]).size == (64, 64)
        assert json.loads((run / r["paths"][1]).read_text())["settings"].get("rank", 0) == 0
    meta = json.loads((run / CHANNEL / "channel__blocks.2_1.json").read_text())
    assert meta["spec"] == "channel:_blocks.2:1" and meta["steps"] == 2 and meta["batch"] == 2
    assert meta["settings"]["job"] == 0 and meta["settings"]["size"] == [64, 64]
    proto = json.loads((run / "02_prototype_efficientnet-lite0/1_goldfish.json").read_text())
    assert proto["settings"]["match"] == "none" and proto["settings"]["sweep"]["rank"] == 0
    assert (run / "config.toml").read_text() == config.read_text()
    assert sorted(logged(run)) == sorted(items)

    config.write_text(CONFIG.replace("steps = 2", "steps = 3"))  # the run folder belongs to its config
    code, _, err = sweep(capsys, config)
    assert code == 2 and "holds a run of a different config.toml" in err


def test_resume_redoes_only_the_unfinished_item(config, capsys, tmp_path, renders):
    assert sweep(capsys, config)[0] == 0
    run = tmp_path / "run"
    victim = run / CHANNEL / "channel__blocks.2_1"
    png_path, json_path = (run / CHANNEL / f"{victim.name}{ext}" for ext in (".png", ".json"))
    png = png_path.read_bytes()
    # a kill mid-item: no JSON, a half-written PNG, a stray temp file of the atomic writer
    json_path.unlink()
    png_path.write_bytes(png[: len(png) // 2])
    (run / CHANNEL / ".channel__blocks.2_1.png.x1y2z3.tmp").write_bytes(b"\x89PNG partial")
    others = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.parent.name != "logs"
              and victim.name not in p.name and p.name != "index.json"}
    renders.clear()
    made = fvis.sweep.sweep(config, progress=False)
    assert "3 done, 1 to do" in capsys.readouterr().out
    assert made == [f"{CHANNEL}/channel__blocks.2_1"]
    assert renders == [["channel:_blocks.2:0", "channel:_blocks.2:1"]]  # its fixed batch: same pixels as before
    assert png_path.read_bytes() == png and json_path.exists()
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert temp_files(run) == []
    assert json.loads((run / "index.json").read_text())["done"] == 4


def test_interrupted_sweep_finishes_each_item_once(config, capsys, tmp_path, monkeypatch):
    real, calls = fvis.sweep.render, []

    def killed_after_first_batch(model, objs, **kw):
        calls.append(len(objs))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(model, objs, **kw)

    monkeypatch.setattr(fvis.sweep, "render", killed_after_first_batch)
    code, _, err = sweep(capsys, config)
    assert code == 130 and "interrupted" in err
    run = tmp_path / "run"
    assert not (run / "index.json").exists() and temp_files(run) == []
    assert sorted(p.stem for p in (run / CHANNEL).glob("*.json")) == ["channel__blocks.2_0", "channel__blocks.2_1"]
    monkeypatch.setattr(fvis.sweep, "render", real)
    code, out, err = sweep(capsys, config)
    assert code == 0, err
    assert "2 done, 2 to do" in out
    assert sorted(logged(run)) == sorted(ITEMS)  # every item made exactly once over both runs
    assert json.loads((run / "index.json").read_text())["done"] == 4


def test_torchrun_splits_items_across_ranks(tmp_path):
    (tmp_path / "sweep.toml").write_text(CONFIG.replace('"0-2"', '"0-3"').replace('["hummingbird"]', '["hummingbird", 1]'))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fvis", "sweep", "sweep.toml", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    print(f"torchrun sweep: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    items = json.loads((run / "index.json").read_text())["items"]
    assert len(items) == 6 and {r["status"] for r in items} == {"done"}
    made = {rank: (run / "logs" / f"rank{rank}.log").read_text().split()[1::2] for rank in (0, 1)}
    assert made[0] and made[1] and not set(made[0]) & set(made[1])
    assert sorted(made[0] + made[1]) == sorted(f"{r['folder']}/{r['stem']}" for r in items)
    for rank, stems in made.items():
        for stem in stems:
            settings = json.loads((run / f"{stem}.json").read_text())["settings"]
            assert settings["rank"] == rank and settings["world_size"] == 2
    assert "0 done, 6 to do" in proc.stdout


BAD = [
    ("steps = 2\n[[job]\nkind = 1\n", "is not valid TOML: Expected ']]' at the end of an array declaration (at line 2, column 6)"),
    ("stpes = 2\n" + CONFIG, "unknown top-level key(s) ['stpes']"),
    (CONFIG + '[[job]]\nkind = "chanel"\n', "job 2 (chanel): kind must be one of channel, logit, prototype"),
    (CONFIG + '[[job]]\nkind = "channel"\nmodel = "efficientnet-lite0"\nchannels = [1]\n',
     "job 2 (channel): missing key(s) ['layer']"),
    (CONFIG + '[[job]]\nkind = "logit"\nmodel = "efficientnet-lite0"\nclasses = [1]\ncolour = 1\n',
     "job 2 (logit): unknown key(s) ['colour']"),
    (CONFIG + '[[job]]\nkind = "logit"\nmodel = "efficientnet-lite9"\nclasses = [1]\n',
     "job 2 (logit): unknown model 'efficientnet-lite9'"),
    (CONFIG.replace('"_blocks.2"', '"blocks.2"'), "job 0 (channel): unknown layer 'blocks.2'. Did you mean: _blocks.2"),
    (CONFIG.replace('"0-2"', '[0, "20-30"]'),
     "job 0 (channel): channel 24 out of range for layer '_blocks.2' with 24 channels"),
    (CONFIG.replace('"0-2"', '"2-0"'), "job 0 (channel): channels must be integers or ranges like \"0-15\", got '2-0'"),
    (CONFIG.replace('"hummingbird"', '"humingbird"'), "job 1 (logit): unknown class name 'humingbird'"),
    (CONFIG.replace('"hummingbird"', "1000"), "job 1 (logit): class 1000 out of range"),
    (CONFIG + PROTOTYPE_JOB.replace("heldout", "held_out"), "job 2 (prototype): unknown key 'held_out'"),
    (CONFIG + PROTOTYPE_JOB + "log_prob = true\n",
     "job 2 (prototype): recipe setting 'log_prob' was replaced: use score='log_prob'"),
    (CONFIG + PROTOTYPE_JOB.replace('"none"', '"images:nowhere"'), "job 2 (prototype): not a folder: nowhere"),
    (CONFIG.replace('out = "run"', ""), "no run folder"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":")[0][:24] for _, m in BAD])
def test_bad_config_is_one_line_and_writes_nothing(config, capsys, tmp_path, renders, text, message):
    config.write_text(text)
    code, out, err = sweep(capsys, config)
    assert code == 2 and err.count("\n") == 1 and err.startswith("fvis: error: "), err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"] and renders == []


def test_logit_items_are_named_alike_by_index_or_by_name():
    from fvis.classes import imagenet_classes
    from fvis.sweep import _named_logit

    assert _named_logit(94, imagenet_classes()).name == _named_logit("hummingbird", imagenet_classes()).name \
        == "logit:94:hummingbird"


def test_prototype_jobs_take_their_recipes_steps_unless_steps_is_set():
    """The sweep's default of 256 steps is for renders; a prototype job without ``steps`` (in the job
    or at the top level) runs its recipe's own count, the one its readability was measured at."""
    import tomllib

    from fvis.recipes import RECIPES

    def steps(config: str) -> list[int]:
        jobs, _ = fvis.sweep.plan(tomllib.loads(config), "cpu")
        return [job.settings["steps"] for job in jobs]

    two = PROTOTYPE_JOB + PROTOTYPE_JOB.replace('match = "none"', 'match = "none"\nrecipe = "lucent"')
    assert steps(two) == [RECIPES["robust"].steps, RECIPES["lucent"].steps] == [1024, 512]
    assert steps("steps = 7\n" + two) == [7, 7]
    channel_job = '\n[[job]]\nkind = "channel"\nmodel = "efficientnet-lite0"\nlayer = "_blocks.2"\nchannels = 0\n'
    assert steps(PROTOTYPE_JOB.replace("heldout = 0", "heldout = 0\nsteps = 5") + channel_job) == [5, 256]


def test_a_prototype_job_says_when_a_setting_has_no_effect():
    """The sweep moves recipe settings into the recipe before make_prototypes sees them: it warns itself."""
    import tomllib
    import warnings

    job = PROTOTYPE_JOB.replace('match = "none"', 'match = "none"\ncentre = 2.0\nrecipe = "{}"')
    with pytest.warns(UserWarning, match="centre has no effect without transparency") as seen:
        fvis.sweep.plan(tomllib.loads(job.format("robust-blur")), "cpu")
    assert len(seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # with transparency the same setting is used
        fvis.sweep.plan(tomllib.loads(job.format("transparent")), "cpu")

