"""A language-model neuron explained two ways in one report: the optimized prompts that drive it
(``fvis invert --neuron``'s ``result.json``) next to its top-activating corpus snippets
(:func:`fvis.lm.corpus.corpus_topk`), as ``report.md`` and ``report.html`` with the activating
token highlighted (all text HTML-escaped)."""
from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import FvisError
from ..files import atomic_write


def read_prompts(path: str | Path, spec: str | None = None) -> dict:
    """The prompts of an ``fvis invert --neuron`` run (its ``result.json``, or the folder holding it)."""
    path = Path(path)
    path = path / "result.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FvisError(f"no invert result at {str(path)!r} (run fvis invert --neuron ... --out DIR)") from None
    except (OSError, ValueError) as e:
        raise FvisError(f"cannot read invert result {str(path)!r}: {e}") from None
    if data.get("settings", {}).get("target") is not None or "restarts" not in data:
        raise FvisError(f"{str(path)!r} is not the result of fvis invert --neuron")
    return data


def _md(text: str) -> str:
    """``text`` as literal Markdown table-cell text (no links, emphasis, HTML or line breaks)."""
    for ch in "\\|[]*_<>":
        text = text.replace(ch, "\\" + ch)
    return text.replace("`", "'").replace("\n", "\u23ce")


def write_report(topk: dict, out: str | Path, prompts: dict | None = None) -> list[Path]:
    """``report.md`` and ``report.html`` in ``out``: the optimized prompts (when given) and the
    corpus top-k, each snippet with its activating token marked."""
    out = Path(out)
    title = f"Neuron {topk['neuron']} of {topk['model']}"
    md = [f"# {title}", ""]
    page = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:2px 8px;"
            "vertical-align:top}mark{background:#fd6;font-weight:bold}.ctx{font-family:monospace;white-space:pre-wrap}"
            "</style>", f"<h1>{html.escape(title)}</h1>"]
    if prompts is not None:
        s = prompts["settings"]
        base = prompts.get("baseline")
        note = f"; random prompts' median {base:.4g}" if base is not None else ""
        md += [f"## Optimized prompts ({s.get('method')}, {s.get('length')} tokens, objective "
               f"`{_md(str(s.get('objective')))}`{note})", "", "| # | prompt | value | round-trip |", "|---:|---|---:|---|"]
        page += [f"<h2>Optimized prompts ({html.escape(str(s.get('method')))}, {s.get('length')} tokens, objective "
                 f"{html.escape(str(s.get('objective')))}{html.escape(note)})</h2>",
                 "<table><tr><th>#</th><th>prompt</th><th>value</th><th>round-trip</th></tr>"]
        for i, r in enumerate(prompts["restarts"], 1):
            value = "–" if r.get("value") is None else f"{r['value']:.4g}"
            md.append(f"| {i} | `{_md(repr(r['text']))}` | {value} | {'yes' if r['roundtrip'] else 'no'} |")
            page.append(f"<tr><td>{i}</td><td class='ctx'>{html.escape(r['text'])}</td><td>{value}</td>"
                        f"<td>{'yes' if r['roundtrip'] else 'no'}</td></tr>")
        page.append("</table>")
        md.append("")
    head = (f"Top {len(topk['snippets'])} of {topk['tokens']} token positions in {topk['documents']} document(s) "
            f"(windows of {topk['window']} tokens; corpus median {topk['median']:.4g})")
    md += ["## Corpus top-k", "", head + "; the activating token is in **bold** between « ».", "",
           "| # | value | document:token | context |", "|---:|---:|---|---|"]
    page += [f"<h2>Corpus top-k</h2><p>{html.escape(head)}; the activating token is highlighted.</p>",
             "<table><tr><th>#</th><th>value</th><th>document:token</th><th>context</th></tr>"]
    for s in topk["snippets"]:
        where = f"{Path(s.doc).name}:{s.pos}"
        md.append(f"| {s.rank} | {s.value:.4g} | {_md(where)} | {_md(s.before)}**«{_md(s.token)}»**{_md(s.after)} |")
        page.append(f"<tr><td>{s.rank}</td><td>{s.value:.4g}</td><td>{html.escape(where)}</td><td class='ctx'>"
                    f"{html.escape(s.before)}<mark>{html.escape(s.token)}</mark>{html.escape(s.after)}</td></tr>")
    page.append("</table>")
    paths = [atomic_write(out / "report.md", lambda f: f.write(("\n".join(md) + "\n").encode("utf-8"))),
             atomic_write(out / "report.html", lambda f: f.write(("\n".join(page) + "\n").encode("utf-8")))]
    data = {k: v for k, v in topk.items() if k != "snippets"} | {"snippets": [asdict(s) for s in topk["snippets"]]}
    paths.append(atomic_write(out / "topk.json", lambda f: f.write(json.dumps(data, indent=1, ensure_ascii=False)
                                                                   .encode("utf-8"))))
    return paths
