"""Saved CAVs rendered on the real Lite0: ``cav:FILE`` objectives, a class logit steered toward /
away from a concept, and the render command's errors for bad CAV files."""
import json
from pathlib import Path

import objectives
import pytest
import torch

import fvis
from fvis import concepts as C
from fvis.cli import main
from fvis.concepts.objective import parse_cav, split_cav_spec, steer
from fvis.hooks import Capture, frozen
from fvis.render import render

LAYER = "_blocks.8"


@pytest.fixture(scope="module")
def cavs(lite0, coffee, tmp_path_factory):
    """Stripes CAVs of Lite0 at _blocks.8 for espresso (3 runs, small sets), both poolings."""
    from skimage import data

    tmp = tmp_path_factory.mktemp("cavs")
    photos = [torch.from_numpy(getattr(data, n)()).permute(2, 0, 1).float() / 255 for n in ("astronaut", "rocket")]
    pool = torch.cat([C.random_crops(p[None], 12, 224, seed=3 + i) for i, p in enumerate(photos)])
    cls = torch.stack([coffee, coffee.flip(-1)])
    out = {}
    for pool_kind in ("mean", "flatten"):
        r = C.tcav(lite0, [LAYER], "espresso", cls, {"stripes": C.texture("stripes", 8, 224, 1)}, pool, runs=3,
                   min_images=4, cache=False, pool=pool_kind)
        out[pool_kind] = r.save_cavs(tmp / f"{pool_kind}.safetensors")
    return out


def projection(model, images, obj):
    """The objective measured on final images, without transforms."""
    with torch.no_grad(), frozen(model), Capture(model, obj.layers) as cap:
        return obj(cap.forward(images))


def test_cav_spec_forms():
    assert split_cav_spec("cav:some/file.safetensors") == (Path("some/file.safetensors"), None, None)
    f, c, l = split_cav_spec("cav:x/cavs.safetensors:stripes@_blocks.8")
    assert (str(f), c, l) == ("x/cavs.safetensors", "stripes", "_blocks.8")
    with pytest.raises(fvis.FvisError, match="expected cav:FILE"):
        split_cav_spec("cav:")


def test_saved_cav_renders_and_its_projection_rises(lite0, cavs):
    obj = parse_cav(f"cav:{cavs['mean']}:stripes")
    assert obj.name == f"cav:stripes@{LAYER}"
    start = fvis.FourierImage(96, batch=1, seed=0)
    before = projection(lite0, start().detach(), obj)
    res = render(lite0, [obj], size=96, steps=12, progress=False)
    after = projection(lite0, res.input, obj)
    assert after.item() > before.item() + 1.0, (before, after)


def test_logit_steered_toward_and_away_from_a_concept(lite0, cavs):
    cav = parse_cav(f"cav:{cavs['mean']}")  # the file's only concept
    logit = objectives.class_logit("espresso")
    objs = [logit, steer(logit, cav, 2.0), steer(logit, cav, 2.0, away=True)]
    res = render(lite0, objs, size=96, steps=12, progress=False)
    p = projection(lite0, res.input, cav)
    assert p[1] > p[0] > p[2], p  # toward > plain > away along the stripes CAV
    with pytest.raises(fvis.FvisError, match="weight must be >= 0"):
        steer(logit, cav, -1.0)


def _render(capsys, *argv):
    code = main(["render", "--model", "efficientnet-lite0", "--steps", "2", "--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_command_with_cav_and_bad_cav_files(cavs, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "r"
    code, printed, err = _render(capsys, "-o", "logit:espresso", "--toward", f"cav:{cavs['mean']}:stripes",
                                 "--concept-weight", "0.5", "--size", "64", "--out", str(out))
    assert code == 0, err
    assert f"cav:stripes@{LAYER}" in printed and "logit:967:espresso" in printed
    meta = json.loads((out / "logit_espresso.json").read_text())
    assert meta["settings"]["concept_weight"] == 0.5 and meta["settings"]["toward"].startswith("cav:")

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    narrow = tmp_path / "narrow.safetensors"  # the CAVs cut to 40 of the layer's 112 channels
    with safe_open(str(cavs["mean"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    save_file({k: (v[:, :40].contiguous() if k.startswith("cav.") else v) for k, v in tensors.items()}, str(narrow),
              metadata)
    bad = [(["-o", f"cav:{tmp_path / 'missing.safetensors'}"], "CAV file not found"),
           (["-o", f"cav:{garbage}"], "is not an fvis CAV file"),
           (["-o", f"cav:{cavs['mean']}:plaid"], "no CAV for concept 'plaid'"),
           (["-o", f"cav:{narrow}"], "direction has 40 entries but layer '_blocks.8' has 112 channels"),
           (["-o", f"cav:{cavs['flatten']}", "--size", "96"], "the CAV was fitted on _blocks.8 maps of shape"),
           (["-o", "logit:espresso", "--away", "channel:_blocks.8:3"], "expected cav:FILE")]
    for argv, message in bad:
        code, printed, err = _render(capsys, *argv, "--out", str(tmp_path / "bad"))
        assert code == 2 and printed == "", (argv, printed, err)
        assert err.startswith("fvis: error: ") and err.count("\n") == 1 and message in err, (argv, err)


def test_direction_spec_is_the_cav_layer_first_or_any_saved_vector(lite0, cavs, tmp_path, capsys):
    import numpy as np
    from safetensors.torch import save_file

    from fvis.concepts.objective import split_direction_spec

    assert split_direction_spec("direction:_blocks.8:x/cavs.safetensors:stripes") == (
        "_blocks.8", Path("x/cavs.safetensors"), "stripes")
    with pytest.raises(fvis.FvisError, match="expected direction:LAYER:FILE"):
        split_direction_spec("direction:_blocks.8")
    # the CAV named layer first is the same objective as cav:FILE:CONCEPT@LAYER
    images = torch.rand(2, 3, 96, 96)
    a = projection(lite0, images, parse_cav(f"direction:{LAYER}:{cavs['mean']}"))
    b = projection(lite0, images, parse_cav(f"cav:{cavs['mean']}:stripes@{LAYER}"))
    assert torch.equal(a, b)
    # any saved vector: .npy, .pt and a one-tensor .safetensors give objectives.direction of it
    v = torch.randn(112)
    np.save(tmp_path / "v.npy", v.numpy())
    torch.save(v, tmp_path / "v.pt")
    save_file({"v": v}, str(tmp_path / "v.safetensors"))
    want = projection(lite0, images, objectives.direction(LAYER, v))
    for name in ("v.npy", "v.pt", "v.safetensors"):
        got = projection(lite0, images, parse_cav(f"direction:{LAYER}:{tmp_path / name}"))
        assert torch.allclose(got, want), name
    save_file({"a": v, "b": v.clone()}, str(tmp_path / "two.safetensors"))
    np.save(tmp_path / "m.npy", np.zeros((3, 4), dtype=np.float32))
    bad = [(f"direction:{LAYER}:{tmp_path / 'two.safetensors'}", "holds 2 tensors"),
           (f"direction:{LAYER}:{tmp_path / 'm.npy'}", "a direction is one vector, got (3, 4)"),
           (f"direction:{LAYER}:{tmp_path / 'nope.npy'}", "direction file not found"),
           (f"direction:_blocks.2:{tmp_path / 'v.npy'}", "direction has 112 entries but layer '_blocks.2' has 24"),
           (f"direction:_blocks.2:{cavs['mean']}", "no CAV at _blocks.2")]
    for spec, message in bad:
        code, printed, err = _render(capsys, "-o", spec, "--size", "64", "--out", str(tmp_path / "bad"))
        assert code == 2 and printed == "", (spec, printed, err)
        assert err.startswith("fvis: error: ") and err.count("\n") == 1 and message in err, (spec, err)
    code, printed, err = _render(capsys, "-o", f"direction:{LAYER}:{tmp_path / 'v.npy'}", "--size", "64",
                                 "--out", str(tmp_path / "ok"))
    assert code == 0 and f"direction:{LAYER}" in printed, err
