"""``fvis gallery``: one static HTML page for a run folder, readable from disk without a server.

Every ``*.png`` with a sibling ``*.json`` (as written by render, prototypes and sweeps) is an item,
found recursively and grouped by folder: the image, its title, tables of its metrics and settings,
and an inline SVG polyline per ``history`` curve. A folder's ``evaluation.json`` (or
``evaluation.md``) and ``entanglement.png`` / ``entanglement.json`` are shown above its items.
Images are linked by relative path; CSS and SVG are inline; no scripts, no network. Every string
from the files is HTML-escaped and every path URL-quoted.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from html import escape
from pathlib import Path
from urllib.parse import quote

from .errors import FvisError
from .files import atomic_write

SUMMARIES = ("evaluation.json", "evaluation.md", "entanglement.png", "entanglement.json")
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:14px}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;margin:0}
.item img{width:100%;image-rendering:auto;border-radius:3px}
.item h3{font-size:14px;margin:.3em 0;word-break:break-word}
table{border-collapse:collapse;font-size:12px;margin:.3em 0}
th,td{padding:1px 6px;text-align:left;vertical-align:top;border-bottom:1px solid #eee;word-break:break-word}
th{color:#555;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}
.curve{margin:.2em 0;font-size:11px;color:#555}.curve svg{display:block;background:#f4f6fb}
.summary img{max-width:100%}small{color:#777}pre{font-size:12px;overflow-x:auto}"""


def _fmt(value) -> str:
    """A short text for a JSON value (numbers to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or isinstance(value, (bool, int, str)):
        return "" if value is None else str(value)
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _url(path: Path, base: Path) -> str:
    return quote(os.path.relpath(path, base).replace(os.sep, "/"))


def _read_json(path: Path):
    """The parsed file, or ``None`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _kv_table(pairs) -> str:
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>" if rows else ""


def _grid_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    cell = lambda v: f'<td{" class=num" if isinstance(v, (int, float)) else ""}>{escape(_fmt(v))}</td>'  # noqa: E731
    body = "".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def sparkline(name: str, values, width: int = 230, height: int = 48, max_points: int = 400) -> str:
    """An inline SVG polyline of one history curve (non-finite and non-numeric steps left out)."""
    if not isinstance(values, list):
        return ""
    stride = max(1, math.ceil(len(values) / max_points))
    points = [(i, float(v)) for i, v in enumerate(values[::stride])
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if len(points) < 2:
        return ""
    n = len(values[::stride]) - 1 or 1
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = (hi - lo) or 1.0
    xy = " ".join(f"{2 + i * (width - 4) / n:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}" for i, v in points)
    first, last = points[0][1], points[-1][1]
    return (f'<figure class="curve"><svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(name)}"><polyline fill="none" stroke="#2563eb" stroke-width="1.5" '
            f'points="{xy}"/></svg><figcaption>{escape(name)}: {first:.4g} &rarr; {last:.4g} '
            f"({len(values)} steps; range {lo:.4g}&ndash;{hi:.4g})</figcaption></figure>")


def _title(meta: dict, png: Path) -> str:
    if meta.get("name") is not None and meta.get("class") is not None:
        return f"{meta['name']} ({meta['class']})"
    return str(meta.get("spec") or meta.get("name") or png.stem)


def _item(png: Path, meta: dict, base: Path) -> str:
    src = _url(png, base)
    top = meta.get("top5")
    first = top[0] if isinstance(top, list) and top and isinstance(top[0], dict) else None
    info = [(k, meta[k]) for k in ("model", "objective", "seconds", "steps") if k in meta]
    if first:
        info.append(("top-1", f"{first.get('name', first.get('class'))} ({_fmt(first.get('p'))})"))
    metrics, settings = meta.get("metrics"), meta.get("settings")
    parts = [f'<figure class="item"><a href="{src}"><img src="{src}" alt="{escape(png.name)}" loading="lazy"></a>',
             f"<h3>{escape(_title(meta, png))}</h3><small>{escape(png.name)}</small>", _kv_table(info)]
    if isinstance(metrics, dict):
        parts.append(_kv_table(metrics.items()))
    if isinstance(settings, dict) and settings:
        parts.append(f"<details><summary>settings</summary>{_kv_table(settings.items())}</details>")
    history = meta.get("history")
    if isinstance(history, dict):
        parts += [sparkline(str(k), v) for k, v in history.items()]
    return "".join(parts) + "</figure>"


def _summaries(folder: Path, base: Path) -> tuple[str, int]:
    """HTML for a folder's evaluation and entanglement files, and how many of them could not be read."""
    html, bad = [], 0
    report = _read_json(folder / "evaluation.json") if (folder / "evaluation.json").is_file() else {}
    if not isinstance(report, dict):
        report, bad = {}, bad + 1
    rows = report.get("rows")
    rows = rows if isinstance(rows, list) and all(isinstance(r, dict) for r in rows) else []
    columns = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))] if rows else []
    if columns:
        mean = report.get("mean") if isinstance(report.get("mean"), dict) else {}
        html.append(f"<h3>Evaluation ({escape(_fmt(report.get('model')))})</h3>"
                    + _grid_table(rows + [{columns[0]: "mean", **mean}], columns))
    elif (folder / "evaluation.md").is_file():
        try:
            text = (folder / "evaluation.md").read_text(encoding="utf-8")
            html.append(f"<h3>Evaluation</h3><pre>{escape(text)}</pre>")
        except (OSError, UnicodeDecodeError):
            bad += 1
    if (folder / "entanglement.png").is_file():
        html.append(f'<h3>Entanglement</h3><img src="{_url(folder / "entanglement.png", base)}" alt="entanglement">')
    if (folder / "entanglement.json").is_file():
        ent = _read_json(folder / "entanglement.json")
        pairs = ent.get("pairs") if isinstance(ent, dict) else None
        if isinstance(pairs, list) and all(isinstance(p, dict) for p in pairs):
            html.append("<h3>Most entangled pairs</h3>" + _grid_table(
                pairs, ["a", "name_a", "b", "name_b", "score", "p_b_given_a", "p_a_given_b", "feature_cosine"]))
        else:
            bad += 1
    return (f'<div class="summary">{"".join(html)}</div>' if html else ""), bad


def build_gallery(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, int, int]:
    """Write the gallery of ``run_dir`` to ``out`` (default ``run_dir/index.html``).
    Returns ``(path, items shown, files skipped because unreadable or invalid)``."""
    if not Path(run_dir).is_dir():
        raise FvisError(f"not a folder: {run_dir}")
    run_dir = Path(run_dir).resolve()
    out = Path(out) if out else run_dir / "index.html"
    base = out.resolve().parent
    visible = lambda p: not any(part.startswith(".") for part in p.relative_to(run_dir).parts)  # noqa: E731
    folders: dict[Path, list[str]] = {}
    skipped = shown = 0
    for png in sorted(filter(visible, run_dir.rglob("*.png"))):
        if png.name == "entanglement.png" or not png.with_suffix(".json").is_file():
            continue
        meta = _read_json(png.with_suffix(".json"))
        if not isinstance(meta, dict):
            skipped += 1
            continue
        folders.setdefault(png.parent, []).append(_item(png, meta, base))
        shown += 1
    for name in SUMMARIES:
        for path in filter(visible, run_dir.rglob(name)):
            folders.setdefault(path.parent, [])
    sections = []
    for folder in sorted(folders, key=lambda f: f.relative_to(run_dir).parts):
        summary, bad = _summaries(folder, base)
        skipped += bad
        rel = folder.relative_to(run_dir).as_posix()
        items = folders[folder]
        sections.append(f"<section><h2>{escape(rel if rel != '.' else run_dir.name)} "
                        f"<small>{len(items)} image(s)</small></h2>{summary}"
                        f'<div class="grid">{"".join(items)}</div></section>')
    if not sections:
        raise FvisError(f"nothing to show in {run_dir}: no *.png with a sibling *.json, "
                        f"no evaluation or entanglement files")
    note = f"; {skipped} unreadable or invalid file(s) skipped" if skipped else ""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>fvis gallery: '
            f"{escape(run_dir.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(run_dir.name)}</h1><p>{shown} image(s) in {len(sections)} folder(s){note}.</p>"
            + "".join(sections) + "</body></html>\n")
    if skipped:
        warnings.warn(f"gallery: skipped {skipped} unreadable or invalid file(s)")
    atomic_write(out, lambda f: f.write(page.encode("utf-8")))
    return out, shown, skipped
