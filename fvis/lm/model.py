"""Causal language models for fvis: loading (hub name, local folder, GGUF file, offline SmolLM2)
and :class:`LanguageModel`, the wrapper that lets :func:`fvis.optimize` drive a transformer with
input *embeddings* instead of images.

The wrapper is called as ``lm(x)`` with ``x`` of shape ``(B, K, D)`` (K optimized prompt
positions) and returns next-token logits ``(B, keep, V)`` for the last ``keep`` positions of the
full sequence ``prefix + x + suffix + tail`` (fixed embeddings around the optimized span; ``tail``
holds teacher-forced target tokens). Layer names are ``named_modules()`` of the Hugging Face model
(``model.layers.3.mlp``, ``transformer.h.3``, ...), plus ``output``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import FvisError


class LanguageModel(nn.Module):
    """A Hugging Face causal LM driven by input embeddings: ``(B, K, D) -> (B, keep, V)`` logits.

    Args:
        net: a causal LM (``AutoModelForCausalLM``); its layers keep their own names.
        tokenizer: its tokenizer.
        name: for reports.
        prefix, suffix: token ids placed before / after the K optimized positions.
        tail: teacher-forced token ids appended after the suffix (all but the last target token).
        keep: how many final positions get logits (default ``len(tail) + 1``).

    ``with_context(...)`` returns a view sharing ``net`` with another prefix/suffix/tail.
    """

    fvis_wrapper = True

    def __init__(self, net: nn.Module, tokenizer, name: str = "lm", prefix: Sequence[int] = (),
                 suffix: Sequence[int] = (), tail: Sequence[int] = (), keep: int | None = None):
        super().__init__()
        get = getattr(net, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        if not isinstance(emb, nn.Embedding):
            raise FvisError(f"model {name!r} ({type(net).__name__}) has no input embedding table "
                            f"(get_input_embeddings() gave {type(emb).__name__})")
        self.net, self.tokenizer, self.name = net, tokenizer, name
        self.prefix, self.suffix, self.tail = list(prefix), list(suffix), list(tail)
        self.keep = keep if keep is not None else len(self.tail) + 1

    # -- vocabulary -----------------------------------------------------------------------------
    @property
    def embedding(self) -> torch.Tensor:
        """The input embedding table ``(V, D)`` (the model's own weight, not a copy)."""
        return self.net.get_input_embeddings().weight

    @property
    def vocab_size(self) -> int:
        """Rows usable as tokens: the smaller of the embedding table and the tokenizer."""
        return min(self.embedding.shape[0], len(self.tokenizer))

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(map(int, ids)), clean_up_tokenization_spaces=False)

    def token_texts(self) -> list[str]:
        """Decoded text of every token id ``0..vocab_size-1`` (cached on the tokenizer)."""
        cached = getattr(self.tokenizer, "_fvis_token_texts", None)
        if cached is None or len(cached) != self.vocab_size:
            cached = [self.decode([i]) for i in range(self.vocab_size)]
            try:
                self.tokenizer._fvis_token_texts = cached
            except AttributeError:  # pragma: no cover - exotic tokenizers
                pass
        return cached

    def embed(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Embeddings of token ids: ``(..., L) -> (..., L, D)``."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.net.get_input_embeddings()(ids)

    # -- context --------------------------------------------------------------------------------
    def with_context(self, prefix: Sequence[int] = (), suffix: Sequence[int] = (), tail: Sequence[int] = (),
                     keep: int | None = None) -> "LanguageModel":
        """A view of the same network with other fixed tokens around the optimized span."""
        return LanguageModel(self.net, self.tokenizer, self.name, prefix, suffix, tail, keep)

    def full_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, D)`` prompt embeddings -> ``(B, P + K + S + T, D)`` with prefix, suffix, tail."""
        if x.dim() != 3 or x.shape[-1] != self.embedding.shape[1]:
            raise FvisError(f"language model input must be (B, K, {self.embedding.shape[1]}) embeddings, "
                            f"got {tuple(x.shape)}")
        b = x.shape[0]
        parts = []
        if self.prefix:
            parts.append(self.embed(self.prefix).to(x.dtype).expand(b, -1, -1))
        parts.append(x)
        rest = self.suffix + self.tail
        if rest:
            parts.append(self.embed(rest).to(x.dtype).expand(b, -1, -1))
        return torch.cat(parts, 1) if len(parts) > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, D)`` embeddings -> logits ``(B, keep, V)`` of the last ``keep`` positions."""
        out = self.net(inputs_embeds=self.full_embeddings(x), use_cache=False, logits_to_keep=self.keep)
        return out.logits

    def logits_of_ids(self, ids: torch.Tensor | Sequence[Sequence[int]], keep: int = 0) -> torch.Tensor:
        """Plain forward on whole token sequences ``(B, L) -> (B, L or keep, V)`` (no context added)."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids.dim() == 1:
            ids = ids[None]
        return self.net(input_ids=ids, use_cache=False, logits_to_keep=keep).logits

    def __repr__(self) -> str:
        return (f"LanguageModel({self.name}, {type(self.net).__name__}, vocab {self.vocab_size}, "
                f"dim {self.embedding.shape[1]})")
