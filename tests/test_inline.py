"""Inline display (fvis/inline.py): results show themselves in notebooks, fvis.show grids them, and
nothing of it pulls IPython or matplotlib into `import fvis`."""
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fvis
import objectives as obj
from fvis.attacks import attack
from fvis.attribution import explain
from fvis.concepts.tcav import ConceptResult, TCAVResult
from fvis.lm.evaluation import PromptEval
from fvis.lm.inversion import Inversion
from fvis.render import render

HOSTILE = "<img src=x onerror=alert(1)>"


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_import_fvis_loads_no_ipython_nor_matplotlib():
    code = ("import sys, fvis; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'matplotlib')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"import fvis imported {done.stdout.strip()} {done.stderr[-500:]}"


@pytest.fixture(scope="module")
def rendered(lite0):
    return render(lite0, [obj.channel("_blocks.2", 7), obj.class_logit("goldfinch")], size=64, steps=3,
                  progress=False)


def test_render_result_shows_images_labels_and_values(rendered):
    assert rendered.labels == ["channel:_blocks.2:7", "logit:11:goldfinch"]
    sheet = _png(rendered._repr_png_())
    assert sheet.width > 2 * 160 and sheet.height > 160  # two tiles side by side, labels below
    html = rendered._repr_html_()
    assert html.count("data:image/png;base64,") == 1 and "logit:11:goldfinch" not in html  # labels are in the PNG
    assert f"{rendered.steps}" in html and "s/step" in html
    # the sheet's tiles are the images: the first tile's mean colour matches the rendered input's
    tile = torch.from_numpy(np.array(sheet.crop((6, 6, 166, 166)))).float().mean((0, 1)) / 255
    assert torch.allclose(tile, rendered.input[0].mean((1, 2)), atol=0.03)


def test_attack_and_attribution_show_themselves(lite0, coffee):
    x = torch.nn.functional.interpolate(coffee[None], size=96, mode="area")
    x = (x * 255).round() / 255
    a = attack(lite0, x, method="pgd", eps=4 / 255, steps=2, progress=False)
    sheet = _png(a._repr_png_())
    assert sheet.width > 3 * 160  # clean, adversarial, perturbation
    assert "success rate" in a._repr_html_()
    e = explain(lite0, x, "saliency")
    assert _png(e._repr_png_()).width >= 160
    assert "attribution saliency" in e._repr_html_()


def test_tables_escape_hostile_text():
    best = PromptEval(text=HOSTILE, ids=[1], roundtrip=True, retokenized=[1], success=True, p_target=0.9,
                      greedy=" Paris")
    inv = Inversion(best=best, restarts=[best], settings={"target": HOSTILE}, seconds=1.0, steps=3,
                    seconds_to_success=0.5, stopped="done")
    assert inv._repr_png_() is None  # a table, no picture
    html = inv._repr_html_()
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "0.9" in html
    runs = torch.tensor([0.8, 0.9])
    concept = ConceptResult(HOSTILE, "_blocks.8", 94, "hummingbird", runs, runs, torch.tensor([0.7, 0.8]),
                            torch.zeros(2, 4), torch.zeros(2), torch.ones(2), p_value=0.01, significant=True)
    null = ConceptResult("random", "_blocks.8", 94, "hummingbird", runs / 2, runs, runs, torch.zeros(2, 4),
                         torch.zeros(2), torch.ones(2))
    html = TCAVResult([concept], {"_blocks.8": null}, settings={"runs": 2})._repr_html_()
    assert HOSTILE not in html and "0.85 ± 0.07" in html and html.count("<tr>") == 3


def test_show_grids_results_and_images(rendered, tmp_path):
    shown = fvis.show(rendered, torch.rand(2, 3, 32, 32), [rendered], columns=2, titles=["a", HOSTILE, "c"])
    html = shown._repr_html_()
    assert html.count("class='fvis-panel'") == 3 and "repeat(2, auto)" in html and HOSTILE not in html
    assert shown.save(tmp_path / "grid.html").read_text().startswith("<!doctype html>")
    assert _png(shown.save(tmp_path / "grid.png").read_bytes()).width > 0
    with pytest.raises(TypeError, match="cannot display str"):
        fvis.show("not a result")
