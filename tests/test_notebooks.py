"""The example notebooks (examples/*.ipynb) run top to bottom with FVIS_QUICK=1 (small settings) and
show pictures, so they cannot rot; in git their outputs are stripped."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev dependency (pip install -e '.[dev]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev dependency (pip install -e '.[dev]')")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_is_one_notebook_per_use():
    assert len(NOTEBOOKS) == 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_stripped(path):
    book = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(book.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; strip them before committing"


def _pictures(book) -> int:
    """Image outputs: PNGs, or HTML that embeds one (fvis results' _repr_html_)."""
    count = 0
    for cell in book.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            count += "image/png" in data or "data:image/png;base64," in "".join(data.get("text/html", ""))
    return count


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FVIS_QUICK", "1")
    monkeypatch.setenv("PYTHONWARNINGS", os.environ.get("PYTHONWARNINGS", "ignore::DeprecationWarning"))
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    expected = 1 if path.stem.startswith("07_") else 2  # the LM notebook shows tables, the others pictures
    if expected == 1:
        html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in book.cells for o in c.get("outputs", []))
        assert html.count("<table") >= 2, "both inversions should show their restart tables"
    else:
        assert _pictures(book) >= expected, f"{path.name} showed {_pictures(book)} picture(s)"
