"""Causal language models for fvis, one concern per module: ``model`` (:class:`LanguageModel`, the
wrapper that lets :func:`fvis.optimize` drive a transformer with input *embeddings*), ``loading``
(:func:`load_lm`: hub name, local folder, GGUF file, offline SmolLM2), ``vocab``
(:func:`allowed_tokens`), ``evaluation`` (:func:`evaluate_prompt`: a prompt judged on its real
tokens), ``settings`` (:class:`Prompt`, :class:`Embed`, :class:`Gcg`, :class:`Budget`) and
``inversion`` (:func:`invert`, :func:`invert_many`, :func:`print_summary`), ``study`` (:func:`collect`,
:func:`write_study`: many prompts per target and their distinctive tokens), ``logodds``
(:func:`log_odds`), ``study_charts``, ``corpus`` (:func:`corpus_topk`: a neuron's top-activating
tokens in a text corpus, cached) and ``neuron_report`` (:func:`write_report`). The token parameterizations are in
:mod:`fvis.params.tokens`, the search optimizers in :mod:`fvis.optim`."""
from .evaluation import PromptEval, evaluate_prompt
from .inversion import Inversion, invert, invert_many, print_summary
from .loading import LM_NAMES, SMOLLM2, SMOLLM2_GGUF, gpt2_tokenizer, is_language_model, load_lm, random_gpt2, smollm2_path
from .model import LanguageModel
from .settings import METHODS, Budget, Embed, Gcg, Prompt, check_target, check_targets, read_targets, search_method
from .corpus import Snippet, corpus_topk, neuron_activations, read_corpus
from .logodds import TokenOdds, log_odds
from .neuron_report import read_prompts, write_report
from .study import Study, collect, token_table, write_study
from .vocab import allowed_tokens, planted_targets

__all__ = ["LanguageModel", "load_lm", "LM_NAMES", "SMOLLM2", "SMOLLM2_GGUF", "is_language_model", "random_gpt2",
           "smollm2_path", "gpt2_tokenizer", "allowed_tokens", "PromptEval", "evaluate_prompt", "Inversion",
           "invert", "invert_many", "print_summary", "Prompt", "Embed", "Gcg", "Budget", "METHODS", "search_method",
           "check_target", "check_targets", "read_targets",
           "log_odds", "TokenOdds", "Study", "collect", "token_table", "write_study",
           "read_corpus", "neuron_activations", "corpus_topk", "Snippet", "read_prompts", "write_report",
           "planted_targets"]
