"""``fvis lm-study``: many prompts per target, and the tokens that mark them (log-odds charts)."""
from __future__ import annotations

from ..errors import FvisError
from ..files import check_writable
from ..lm import Prompt, collect, load_lm, search_method, write_study
from ._args import add_run_args
from .invert import target_list

HELP = "collect many successful prompts per target and rank their tokens by log-odds (tokens.csv/json, charts)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="smollm2-135m (offline), gpt2... (hub), a model folder or .gguf file")
    parser.add_argument("--target", metavar="TEXT", action="append", help="a target text (repeat: ' girl', ' boy')")
    parser.add_argument("--targets", metavar="FILE", help="more targets, one per line (leading spaces kept)")
    parser.add_argument("--prompts", type=int, default=50, help="successful prompts wanted per target (default 50)")
    parser.add_argument("--restarts", type=int, default=8, help="prompts per target optimized at once (default 8)")
    parser.add_argument("--time-limit", type=float, default=600.0, metavar="S", help="whole study (default 600 s)")
    parser.add_argument("--patience", type=int, default=40,
                        help="steps before a prompt without success starts again (default 40)")
    parser.add_argument("--length", type=int, default=3, help="prompt tokens K (default 3)")
    parser.add_argument("--method", choices=["embed", "gcg"], default="embed", help="optimization method")
    parser.add_argument("--prior", type=float, default=100.0, help="log-odds Dirichlet prior weight (default 100)")
    parser.add_argument("--top", type=int, default=20, help="tokens per chart (default 20)")
    parser.add_argument("--compare", nargs=2, metavar="TEXT", help="the two targets of compare.png (default: first two)")
    add_run_args(parser)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> None:
    """``fvis lm-study``: :func:`fvis.lm.collect` then :func:`fvis.lm.write_study` into ``--out``
    (an interrupted study resumes from ``--out/prompts.jsonl``)."""
    prompt = Prompt(length=args.length)
    method = search_method(args.method)
    targets = target_list(args)
    if not targets:
        raise FvisError("give --target TEXT (repeatable) or --targets FILE")
    if args.compare and any(c not in targets for c in args.compare):
        raise FvisError(f"--compare {args.compare[0]!r} {args.compare[1]!r}: both must be targets of the study")
    if args.prior <= 0 or args.top < 1:
        raise FvisError(f"--prior must be > 0 and --top >= 1, got {args.prior} and {args.top}")
    out = check_writable(args.out)
    lm = load_lm(args.model, device=args.device)
    study = collect(lm, targets, prompts=args.prompts, restarts=args.restarts, time_limit=args.time_limit,
                    patience=args.patience, prompt=prompt, method=method,
                    seed=args.seed, out=out, progress=not args.quiet)
    write_study(lm, study, out, prior=args.prior, top=args.top, compare=args.compare)
    for t in targets:
        print(f"{t!r}: {len(study.prompts[t])}/{args.prompts} prompts")
    print(f"{study.seconds:.0f} s -> {out}/tokens.csv, tokens.json, tokens_*.png, compare.png")
