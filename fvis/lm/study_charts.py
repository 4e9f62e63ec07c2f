"""Bar charts of a prompt study (:mod:`fvis.lm.study`): a target's most distinctive prompt tokens
by log-odds z-score (:func:`token_chart`), and two targets side by side (:func:`compare_chart`).
Needs matplotlib; without it, each warns and writes nothing."""
from __future__ import annotations

import warnings
from pathlib import Path


def _figure(path, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(f"{Path(path).name} not written: matplotlib is not installed (pip install matplotlib)")
        return None
    return Figure(layout="constrained", **kwargs)


def _bars(ax, labels, z, counts, colour, title):
    """Horizontal bars, best at the top, each labelled with its counts (target / baseline)."""
    y = list(range(len(labels)))[::-1]
    ax.barh(y, z, color=colour)
    ax.set_yticks(y, [repr(t) for t in labels], fontsize=8)
    for yi, zi, c in zip(y, z, counts):
        ax.text(zi, yi, f" {c}", va="center", fontsize=7)
    ax.set_xlabel("log-odds z-score (informative Dirichlet prior)")
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.2)


def token_chart(target: str, entry: dict, path, top: int = 20) -> Path | None:
    """``entry`` (one target of :func:`fvis.lm.study.token_table`): its ``top`` tokens by z (those
    with z > 0: the tokens that mark the target's prompts)."""
    rows = [r for r in entry["ranked"] if r["z"] > 0][:top]
    fig = _figure(path, figsize=(6.5, 1.2 + 0.28 * max(len(rows), 1)))
    if fig is None:
        return None
    ax = fig.add_subplot(1, 1, 1)
    _bars(ax, [r["token"] for r in rows], [r["z"] for r in rows],
          [f"{r['count']}/{r['baseline_count']}" for r in rows], "tab:blue",
          f"prompts that make the model say {target!r}: {entry['prompts']} prompts\n"
          f"tokens vs {entry['baseline']} (counts: these/baseline)")
    fig.savefig(path, dpi=110)
    return Path(path)


def compare_chart(a: str, b: str, ranked: list, path, top: int = 20) -> Path | None:
    """``ranked``: ``(token, z, count in a, count in b)`` of ``a`` against ``b``, highest z first;
    left: the tokens that mark ``a``, right: those that mark ``b``."""
    left = [r for r in ranked if r[1] > 0][:top]
    right = [r for r in reversed(ranked) if r[1] < 0][:top]
    fig = _figure(path, figsize=(11, 1.2 + 0.28 * max(len(left), len(right), 1)))
    if fig is None:
        return None
    for k, (rows, name, other, colour, sign) in enumerate([(left, a, b, "tab:blue", 1), (right, b, a, "tab:orange", -1)]):
        ax = fig.add_subplot(1, 2, k + 1)
        _bars(ax, [r[0] for r in rows], [sign * r[1] for r in rows],
              [f"{r[2]}/{r[3]}" if sign > 0 else f"{r[3]}/{r[2]}" for r in rows], colour,
              f"tokens marking prompts for {name!r}\nagainst those for {other!r} (counts: {name!r}/{other!r})")
    fig.savefig(path, dpi=110)
    return Path(path)
