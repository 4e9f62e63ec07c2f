"""`fvis gallery`'s index.html in a real browser (Debian's headless Chromium): every image loads, every
curve renders with a real length, a hostile class name shows as text (no element, no script), and a
screenshot is written for review (to $FVIS_ARTIFACTS when set, else the test's temporary folder).

The test installs nothing: without a `chromium` on the PATH it is skipped (`.ci/run` installs it)."""
import html
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import objectives
from fvis.gallery import build_gallery
from fvis.render import render, save_renders

HOSTILE = "<img src=x onerror=alert(1)>"
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium on the PATH (Debian: apt-get install "
                                                        "chromium; .ci/run installs it)")

# Runs first in <head>: records alerts instead of blocking; runs after load: measures and writes JSON into the DOM.
PRELUDE = "<script>window.__alerts = []; window.alert = m => window.__alerts.push(String(m));</script>"
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                               w: i.naturalWidth}));
  const curves = [...document.querySelectorAll('svg polyline')].map(p => {
    const box = p.getBBox(), r = p.ownerSVGElement.getBoundingClientRect();
    return {points: p.points.numberOfItems, length: p.getTotalLength(), w: box.width, h: box.height,
            shown: r.width > 0 && r.height > 0, ys: [...p.points].map(q => q.y)};
  });
  const out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({imgs, curves, alerts: window.__alerts, text: document.body.innerText});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str, timeout: int = 90) -> str:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           "--allow-file-access-from-files", "--virtual-time-budget=5000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, lite0):
    run = tmp_path_factory.mktemp("browser") / "run"
    result = render(lite0, [objectives.parse("logit:daisy", lite0.class_names)], size=64, steps=4, progress=False)
    save_renders(result, lite0, ["logit:daisy"], run / "renders", {"steps": 4})
    Image.new("RGB", (24, 24), (30, 120, 200)).save(run / "7_hostile.png")
    (run / "7_hostile.json").write_text(json.dumps({"class": 7, "name": HOSTILE, "history": {"loss": [3, 2.5, 1, 0.5]},
                                                    "top5": [{"class": 7, "name": HOSTILE, "p": 0.5}]}))
    Image.new("L", (40, 20), 128).save(run / "entanglement.png")
    path, shown, skipped = build_gallery(run)
    assert (shown, skipped) == (2, 0)
    return path


def test_gallery_in_chromium(gallery):
    page = gallery.read_text(encoding="utf-8")
    probe = gallery.with_name("probe.html")
    probe.write_text(page.replace("<head>", "<head>" + PRELUDE, 1).replace("</body>", PROBE + "</body>", 1),
                     encoding="utf-8")
    dom = _chromium("--dump-dom", probe.as_uri())
    start = dom.index('<pre id="__probe">') + len('<pre id="__probe">')
    report = json.loads(html.unescape(dom[start:dom.index("</pre>", start)]))
    srcs = [i["src"] for i in report["imgs"]]
    assert len(srcs) == page.count("<img ") == 3, srcs  # the two items and the entanglement map; nothing injected
    assert all(i["ok"] for i in report["imgs"]), report["imgs"]
    assert "x" not in srcs and report["alerts"] == []
    assert report["text"].count(HOSTILE) >= 2  # title and top-1 line, shown as text
    curves = report["curves"]
    assert len(curves) == 2, curves  # the render's objective history and the hostile item's loss
    assert all(c["points"] == 4 and c["w"] > 50 and c["h"] > 10 and c["shown"] for c in curves), curves
    loss = curves[1] if curves[0]["ys"][0] > curves[0]["ys"][-1] else curves[0]
    assert loss["ys"] == sorted(loss["ys"])  # the falling loss is drawn falling (SVG y grows downwards)


def test_gallery_screenshot(gallery):
    folder = Path(os.environ.get("FVIS_ARTIFACTS") or gallery.parent)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "gallery_screenshot.png"
    shot.unlink(missing_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1200,1400", gallery.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, pictures and curves drawn, not a blank page
