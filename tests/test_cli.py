"""The command line: renders real files; bad input gives one clear line and exit status 2."""
import json

import pytest
import torch
from PIL import Image

from fvis.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_writes_images_json_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "channel:_blocks.2:3",
                            "-o", "logit:hummingbird", "-o", "neuron:_blocks.5:1:1:2", "--size", "64x80",
                            "--steps", "3", "--seed", "4", "--quiet", "--out", str(out))
    assert code == 0, err
    names = ["channel__blocks.2_3", "logit_hummingbird", "neuron__blocks.5_1_1_2"]
    for name in names:
        assert Image.open(out / f"{name}.png").size == (80, 64)
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["model"] == "efficientnet-lite0" and meta["seed"] == 4 and meta["steps"] == 3
        assert meta["settings"]["size"] == [64, 80] and meta["settings"]["transforms"] is True
        assert meta["seconds_per_step"] > 0 and len(meta["history"]["objective"]) == 3
        assert {"torch", "torchvision", "kornia", "fvis"} <= set(meta["versions"])
        assert len(meta["top5"]) == 5
    assert Image.open(out / "contact_sheet.png").size[0] > 3 * 64
    assert "3 image(s)" in stdout


def test_no_channels_last_changes_only_the_layout(tmp_path, capsys, monkeypatch):
    import numpy as np

    from fvis.hooks import Capture

    decided, plan = [], Capture.plan

    def recording_plan(self, *args, **kwargs):
        acts = plan(self, *args, **kwargs)
        decided.append(self.channels_last)  # the layout forward() really uses from here on
        return acts

    monkeypatch.setattr(Capture, "plan", recording_plan)
    images = {}
    for flag in ([], ["--no-channels-last"]):
        decided.clear()
        out = tmp_path / ("nchw" if flag else "auto")
        code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "logit:goldfinch", "--size", "64",
                           "--steps", "3", "--seed", "1", "--quiet", *flag, "--out", str(out))
        assert code == 0, err
        meta = json.loads((out / "logit_goldfinch.json").read_text())
        assert meta["settings"]["channels_last"] == ("no" if flag else "auto")
        assert decided == [not flag]  # auto on the CPU: channels-last; the flag: plain NCHW
        images[bool(flag)] = np.asarray(Image.open(out / "logit_goldfinch.png"), dtype=int)
    assert np.abs(images[True] - images[False]).max() <= 2  # same run up to float rounding



def test_render_fold_runs_a_folded_copy(tmp_path, capsys, monkeypatch):
    from fvis.hooks import Capture

    runs = []
    plan = Capture.plan

    def recording_plan(self, *args, **kwargs):
        acts = plan(self, *args, **kwargs)
        runs.append(sum(isinstance(m, torch.nn.BatchNorm2d) for m in self._run.modules()))
        return acts

    monkeypatch.setattr(Capture, "plan", recording_plan)
    code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "logit:goldfinch", "--size", "64",
                       "--steps", "3", "--quiet", "--fold", "--out", str(tmp_path))
    assert code == 0, err
    assert runs == [0]  # every BatchNorm folded away in the model the loop ran
    assert json.loads((tmp_path / "logit_goldfinch.json").read_text())["settings"]["fold"] is True

def test_layers_prints_types_and_shapes(capsys):
    code, out, _ = run(capsys, "layers", "efficientnet-lite0")
    assert code == 0
    assert any(line.split()[:2] == ["_blocks.3", "MBConvBlock"] and "(1, 40, 28, 28)" in line
               for line in out.splitlines())


@pytest.mark.parametrize("argv, message", [
    (["-o", "chanel:_blocks.2:3"], "cannot parse objective 'chanel:_blocks.2:3'"),
    (["-o", "channel:blocks.2:3"], "unknown layer 'blocks.2'. Did you mean: _blocks.2"),
    (["-o", "channel:_blocks.2:999"], "channel 999 out of range for layer '_blocks.2' with 24 channels: valid 0..23"),
    (["-o", "neuron:_blocks.2:1:99:0"], "outside layer '_blocks.2'"),
    (["-o", "logit:humingbird"], "unknown class name 'humingbird'. Did you mean: hummingbird"),
    (["-o", "logit:1000"], "class index 1000 out of range: valid 0..999"),
])
def test_bad_render_input_is_one_clear_line(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", *argv, "--steps", "2",
                       "--size", "32", "--quiet", "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fvis: error: ") and message in err
    assert "Traceback" not in err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "logit:1",
                       "--out", str(blocker / "sub"))
    assert code == 2 and err.startswith("fvis: error: cannot write to output folder") and err.count("\n") == 1


def test_unknown_model_and_bad_numbers(tmp_path, capsys):
    code, _, err = run(capsys, "layers", "resnet5O")
    assert code == 2 and "unknown model 'resnet5O'. Did you mean: resnet50" in err
    with pytest.raises(SystemExit) as exc:
        main(["render", "--model", "efficientnet-lite0", "-o", "logit:1", "--steps", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["attack", "--model", "efficientnet-lite0", "--images", ".", "--untargeted", "--eps", "0", "--out", "x"],
    ["render", "--model", "efficientnet-lite0", "-o", "logit:1", "--steps", "-5", "--out", "x"],
    ["render", "--model", "efficientnet-lite0", "-o", "logit:1", "--size", "0", "--out", "x"],
    ["render", "--out", "x"],
])
def test_argument_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("fvis: error: ") and err.count("\n") == 1  # no usage block


def test_help_shows_defaults_and_texts(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--steps STEPS optimization steps (default: 256)", "(default: 0.05)", "--model MODEL",
                     "--seed SEED random seed", "--out OUT output folder"):
        assert expected in text


def test_models_lists_language_models_too(capsys):
    code, out, _ = run(capsys, "models")
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert code == 0 and {"efficientnet-lite0", "resnet50", "smollm2-135m", "gpt2"} <= set(names)


def test_unknown_language_model_fails_at_once_with_close_names(tmp_path, capsys):
    code, _, err = run(capsys, "invert", "--model", "smollm-135m", "--target", "x", "--out", str(tmp_path))
    assert code == 2 and "unknown language model 'smollm-135m'. Did you mean: smollm2-135m" in err
    assert err.count("\n") == 1


FACTORY = '''
import torch
from torch import nn

import fvis


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def wrapped():
    return fvis.wrap(make(), mean=[0.5] * 3, std=[0.25] * 3, input_size=(20, 24), class_names=list("abcde"))
'''


def test_model_from_a_factory_in_the_current_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "mynets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    code, _, err = run(capsys, "render", "--model", "mynets:make", "-o", "channel:0:1", "--size", "32",
                       "--steps", "2", "--quiet", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--out", "a")
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "channel_0_1.json").read_text())["model"] == "mynets:make"
    code, out, err = run(capsys, "render", "--model", "mynets:wrapped", "-o", "logit:c", "--steps", "2", "--quiet",
                         "--out", "b")
    assert code == 0, err
    assert Image.open(tmp_path / "b" / "logit_c.png").size == (24, 20)  # the fvis model's own input size
    code, _, err = run(capsys, "explain", "--model", "mynets:wrapped", "--image", "b/logit_c.png", "-m", "saliency",
                       "--out", "c")
    assert code == 0 and (tmp_path / "c" / "saliency.json").is_file(), err
    for spec, message in [("mynets:nothing", "has no 'nothing'"), ("nomodule:make", "cannot import 'nomodule'")]:
        code, _, err = run(capsys, "layers", spec)
        assert code == 2 and message in err
    code, _, err = run(capsys, "layers", "mynets:wrapped", "--mean", "0,0,0", "--std", "1,1,1")
    assert code == 2 and "drop --mean/--std/--input-size" in err


def test_render_says_when_decay_power_has_no_effect(tmp_path, capsys):
    """--decay-power shapes the Fourier image only: with --param pixel one warning line, and the JSON
    records no decay power for that run."""
    code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "logit:goldfinch", "--size", "64",
                       "--steps", "1", "--quiet", "--param", "pixel", "--decay-power", "2", "--out", str(tmp_path / "p"))
    assert code == 0 and err.splitlines() == ["fvis: warning: --decay-power has no effect with --param pixel (Fourier only)"]
    assert json.loads((tmp_path / "p" / "logit_goldfinch.json").read_text())["settings"]["decay_power"] is None
    code, _, err = run(capsys, "render", "--model", "efficientnet-lite0", "-o", "logit:goldfinch", "--size", "64",
                       "--steps", "1", "--quiet", "--decay-power", "2", "--out", str(tmp_path / "f"))
    assert code == 0 and err == ""
    assert json.loads((tmp_path / "f" / "logit_goldfinch.json").read_text())["settings"]["decay_power"] == 2.0
