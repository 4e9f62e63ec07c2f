"""A text corpus for language-model neurons: documents read from a file or a folder
(:func:`read_corpus`), tokenized into windows, and one neuron's activation at every token
position, batched and cached on disk as safetensors (:func:`neuron_activations`), with the
top-activating positions and their context (:func:`corpus_topk`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

import objectives.language as lang

from ..errors import FvisError
from ..files import atomic_write
from ..hooks import Capture, frozen
from ..progress import progress_bar
from ..reference import cache_dir
from .model import LanguageModel

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def read_corpus(path: str | Path) -> list[tuple[Path, str]]:
    """``(file, text)`` of a text file, or of every ``.txt``/``.md``/``.rst`` file under a folder
    (sorted); undecodable bytes are replaced. No such path, or no text: an error."""
    path = Path(path)
    if not path.exists():
        raise FvisError(f"corpus {str(path)!r} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and p.suffix.lower() in TEXT_SUFFIXES)
    docs = [(f, f.read_text(encoding="utf-8", errors="replace")) for f in files]
    docs = [(f, t) for f, t in docs if t.strip()]
    if not docs:
        kinds = "" if path.is_file() else f" (looked for {', '.join(TEXT_SUFFIXES)} files)"
        raise FvisError(f"corpus {str(path)!r} holds no text{kinds}")
    return docs


def _key(lm, spec, window, docs) -> str:
    h = hashlib.sha256(json.dumps([lm.name, spec, window]).encode())
    for f, text in docs:
        h.update(f"{f}\0{hashlib.sha256(text.encode()).hexdigest()}\n".encode())
    return h.hexdigest()[:20]


@torch.no_grad()
def neuron_activations(lm: LanguageModel, spec: str, docs: list[tuple[Path, str]], *, window: int = 128,
                       batch_size: int = 16, cache: str | Path | None | bool = None, progress: bool = False) -> dict:
    """The neuron ``spec`` (``mlp.L:I``, ``resid.L:I``, ``LAYER:I``) at every token of ``docs``:
    each document is tokenized and cut into windows of ``window`` tokens (each window is the
    model's whole context), run ``batch_size`` windows at a time (right-padded; the model is
    causal, so padding never reaches a real token). Returns ``{"values": (N,), "ids": (N,),
    "doc": (N,) document index, "pos": (N,) token index in its document, "cached": bool}``.
    ``cache``: folder (default :func:`fvis.reference.cache_dir`; ``False``: no cache); the key is
    the model name, the neuron, the window and the documents' names and contents."""
    if window < 2 or batch_size < 1:
        raise FvisError(f"window must be >= 2 and batch size >= 1, got {window} and {batch_size}")
    objective = lang.parse_neuron(lm, spec, position="each")
    path = None
    if cache is not False:
        path = Path(cache or cache_dir()) / "lm-activations" / f"{_key(lm, spec, window, docs)}.safetensors"
        if path.is_file():
            try:
                return {k: v for k, v in load_file(str(path)).items()} | {"cached": True}
            except Exception:  # unreadable cache: recompute and overwrite
                pass
    pieces = []  # (doc, start, ids)
    for d, (_, text) in enumerate(docs):
        ids = lm.encode(text)
        pieces += [(d, s, ids[s:s + window]) for s in range(0, len(ids), window)]
    if not pieces:
        raise FvisError("the corpus has no tokens")
    ctx = lm.with_context([], [], tail=[], keep=1)
    pad = 0
    out = {"values": [], "ids": [], "doc": [], "pos": []}
    checked = False
    batches = range(0, len(pieces), batch_size)
    with frozen(lm), Capture(ctx, objective.layers) as cap:
        for b in progress_bar(batches, show=progress, desc="corpus activations", unit="batch"):
            part = pieces[b:b + batch_size]
            longest = max(len(p[2]) for p in part)
            ids = torch.tensor([p[2] + [pad] * (longest - len(p[2])) for p in part])
            acts = cap.forward(lm.embed(ids).float())
            if not checked:
                objective.check(acts)
                checked = True
            values = objective(acts).float().cpu()  # (B, T)
            for row, (d, start, toks) in enumerate(part):
                n = len(toks)
                out["values"].append(values[row, :n])
                out["ids"].append(torch.tensor(toks))
                out["doc"].append(torch.full((n,), d))
                out["pos"].append(torch.arange(start, start + n))
    tensors = {k: torch.cat(v).contiguous() for k, v in out.items()}
    if path is not None:
        atomic_write(path, lambda f: f.write(save(tensors)))
    return tensors | {"cached": False}


@dataclass
class Snippet:
    """One top-activating token: its ``value``, document, token position, and the text
    ``before`` / ``token`` / ``after`` it (``context`` tokens each side, same document)."""

    rank: int
    value: float
    doc: str
    pos: int
    before: str
    token: str
    after: str


def corpus_topk(lm: LanguageModel, spec: str, corpus: str | Path, k: int = 20, *, context: int = 12,
                window: int = 128, batch_size: int = 16, cache=None, progress: bool = False) -> dict:
    """The ``k`` token positions of ``corpus`` (file or folder) where the neuron ``spec`` is
    highest, with ``context`` tokens of text each side: ``{"snippets": [Snippet], "tokens": N,
    "documents": D, "cached": bool, ...}``."""
    if k < 1 or context < 0:
        raise FvisError(f"k must be >= 1 and context >= 0, got {k} and {context}")
    docs = read_corpus(corpus)
    acts = neuron_activations(lm, spec, docs, window=window, batch_size=batch_size, cache=cache, progress=progress)
    values = acts["values"]
    top = values.topk(min(k, values.numel()))
    doc_ids = {}
    snippets = []
    for r, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        d, pos = int(acts["doc"][i]), int(acts["pos"][i])
        if d not in doc_ids:
            doc_ids[d] = (acts["doc"] == d).nonzero().flatten()
        row = doc_ids[d]
        ids = acts["ids"][row].tolist()
        snippets.append(Snippet(r, v, str(docs[d][0]), pos, lm.decode(ids[max(0, pos - context):pos]),
                                lm.decode([ids[pos]]), lm.decode(ids[pos + 1:pos + 1 + context])))
    return {"neuron": spec, "model": lm.name, "snippets": snippets, "tokens": int(values.numel()),
            "documents": len(docs), "window": window, "cached": bool(acts["cached"]),
            "median": float(values.median())}
