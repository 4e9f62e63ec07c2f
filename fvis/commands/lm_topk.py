"""``fvis lm-topk``: the token positions of a text corpus that drive a language-model neuron most."""
from __future__ import annotations

from pathlib import Path

from ..errors import FvisError
from ..files import check_writable
from ..lm import corpus_topk, load_lm, read_corpus, read_prompts, write_report
from ._args import add_run_args, positive_int

HELP = "the corpus token positions (with context) that drive a language-model neuron most; report.md/html"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="smollm2-135m (offline), gpt2... (hub), a model folder or .gguf file")
    parser.add_argument("--neuron", required=True, metavar="LAYER:INDEX", help="mlp.L:I | resid.L:I | MODULE:I")
    parser.add_argument("--corpus", required=True, type=Path, metavar="DIR|FILE",
                        help="a text file or a folder of .txt/.md/.rst files")
    parser.add_argument("-k", type=positive_int, default=20, help="how many top positions (default 20)")
    parser.add_argument("--context", type=int, default=12, help="tokens of context each side (default 12)")
    parser.add_argument("--window", type=int, default=128, help="tokens per model window (default 128)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows per batch (default 16)")
    parser.add_argument("--prompts", type=Path, metavar="DIR|JSON",
                        help="an `fvis invert --neuron` result to show next to the corpus top-k")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    add_run_args(parser, seed=False)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> None:
    """``fvis lm-topk``: :func:`fvis.lm.corpus_topk`, then ``report.md``, ``report.html`` and ``topk.json``."""
    read_corpus(args.corpus)  # an empty or missing corpus fails before the model loads
    prompts = read_prompts(args.prompts) if args.prompts else None
    if args.context < 0 or args.window < 2:
        raise FvisError(f"--context must be >= 0 and --window >= 2, got {args.context} and {args.window}")
    out = check_writable(args.out)
    lm = load_lm(args.model, device=args.device)
    topk = corpus_topk(lm, args.neuron, args.corpus, args.k, context=args.context, window=args.window,
                       batch_size=args.batch_size, cache=False if args.no_cache else None, progress=not args.quiet)
    write_report(topk, out, prompts)
    for s in topk["snippets"]:
        print(f"#{s.rank:<3} {s.value:9.4g}  {Path(s.doc).name}:{s.pos}  {s.before!r} [{s.token!r}] {s.after!r}")
    cached = " (activations from the cache)" if topk["cached"] else ""
    print(f"{topk['neuron']}: top {len(topk['snippets'])} of {topk['tokens']} tokens{cached} -> {out}/report.md, report.html")
