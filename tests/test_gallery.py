"""`fvis gallery`: a static page that escapes every string from the run folder and links files that exist."""
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

import objectives
from fvis.cli import main
from fvis.gallery import build_gallery
from fvis.render import render, save_renders

EVIL = "<script>alert(1)</script>"


def _item(folder: Path, stem: str, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / f"{stem}.png")
    (folder / f"{stem}.json").write_text(json.dumps(meta))


def _links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


@pytest.fixture
def run(tmp_path, lite0):
    run = tmp_path / "run"
    # a real render (3 steps, 32 px) as written by `fvis render`
    result = render(lite0, [objectives.parse("logit:daisy", lite0.class_names)], size=32, steps=3, progress=False)
    save_renders(result, lite0, ["logit:daisy"], run / "renders", {"steps": 3, "note": "<i>x</i>"})
    history = [3.0, 2.0, float("nan"), 1.5, 1.0]
    _item(run, "123_evil", {"class": 123, "name": EVIL, "model": "m", "settings": {"lr": 0.05, "init": EVIL},
                            "metrics": {"clean_p": 0.9, EVIL: 1}, "history": {"loss": history},
                            "top5": [{"class": 1, "name": EVIL, "p": 0.5}]})
    _item(run / "job_0", "a b&c\"d", {"spec": f"logit:{EVIL}", "history": {"objective": [1, 2, 3]}})
    _item(run / "job_0", "broken", {})
    (run / "job_0" / "broken.json").write_text("{not json")
    _item(run / "job_0", "list", {})
    (run / "job_0" / "list.json").write_text("[1, 2]")
    (run / "job_0" / "contact_sheet.png").write_bytes((run / "123_evil.png").read_bytes())  # no JSON: not an item
    (run / "evaluation.json").write_text(json.dumps({"model": "m", "mean": {"clean_p": 0.9}, "rows": [
        {"image": "123_evil.png", "class": 123, "name": EVIL, "clean_p": 0.9, "top1": {}}]}))
    (run / "entanglement.png").write_bytes((run / "123_evil.png").read_bytes())
    (run / "entanglement.json").write_text(json.dumps({"pairs": [
        {"a": 1, "b": 2, "name_a": EVIL, "name_b": "b", "score": 0.4, "p_b_given_a": 0.5, "p_a_given_b": 0.3,
         "feature_cosine": 0.8}]}))
    return run


def test_gallery_escapes_links_and_draws_curves(run):
    with pytest.warns(UserWarning, match="skipped 2"):
        path, shown, skipped = build_gallery(run)
    assert path == run / "index.html" and (shown, skipped) == (3, 2)
    page = path.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower() and "<i>x</i>" not in page and "&lt;i&gt;x&lt;/i&gt;" in page
    assert "http" not in page and "//" not in re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    links = _links(page)
    assert "job_0/a%20b%26c%22d.png" in links and "entanglement.png" in links and "renders/logit_daisy.png" in links
    assert all((path.parent / unquote(link)).is_file() for link in links)
    assert not any("contact_sheet" in link or "broken" in link for link in links)
    curves = re.findall(r'<polyline [^>]*points="([^"]*)"', page)
    assert len(curves) == 3  # loss, objective of the job item, the real render's objective history
    assert sorted(len(c.split()) for c in curves) == [3, 3, 4]  # the NaN step of "loss" left out
    assert "Most entangled pairs" in page and "Evaluation (m)" in page and "daisy" in page


def test_gallery_cli_and_out_elsewhere(run, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "g.html"
    assert main(["gallery", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"{out}: 3 image(s), 2 file(s) skipped" in printed.out
    assert printed.err == "fvis: warning: gallery: skipped 2 unreadable or invalid file(s)\n"
    links = _links(out.read_text())
    assert links and all(link.startswith("../run/") and (out.parent / unquote(link)).is_file() for link in links)
    assert main(["gallery", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["gallery", str(tmp_path / "empty")]) == 2
    assert "nothing to show" in capsys.readouterr().err
