"""``fvis invert``: find a prompt that makes a language model emit TEXT (or drives a neuron)."""
from __future__ import annotations

import json

import objectives.language as lang

from ..errors import FvisError
from ..files import check_writable
from ..lm import (Budget, Prompt, check_targets, invert, invert_many, load_lm, print_summary, read_targets,
                  search_method)
from ._args import add_run_args

HELP = "find a prompt that makes a language model emit TEXT (or drives a neuron)"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="smollm2-135m (offline), gpt2... (hub), a model folder or .gguf file")
    parser.add_argument("--target", metavar="TEXT", action="append",
                        help="the text the model should emit next (repeat for many targets in one batch)")
    parser.add_argument("--targets", metavar="FILE", help="more targets, one per line (leading spaces kept)")
    parser.add_argument("--neuron", metavar="LAYER:INDEX", help="mlp.L:I | resid.L:I | MODULE:I (see fvis layers)")
    parser.add_argument("--position", default="last", help="neuron position: last | all | an index (default: last)")
    parser.add_argument("--length", type=int, default=3, help="prompt tokens K (default 3)")
    parser.add_argument("--restarts", type=int, default=1,
                        help="prompts per target, all (target, restart) pairs optimized as one batch (default 1)")
    parser.add_argument("--steps", type=int, default=Budget.steps,
                        help="at most this many steps (default: %(default)s, i.e. the time limit decides)")
    parser.add_argument("--method", choices=["embed", "gcg"], default="embed", help="optimization method")
    parser.add_argument("--snap", choices=["cosine", "l2"], default=None, help="nearest-token metric (default l2)")
    parser.add_argument("--snap-weight", type=float, default=None, help="snapping penalty weight (default 0)")
    parser.add_argument("--lr", type=float, default=None, help="embed step size (default 10, normalized steps)")
    parser.add_argument("--prefix", default="", help="fixed text before the prompt")
    parser.add_argument("--suffix", default="", help="fixed text after the prompt")
    parser.add_argument("--init", metavar="TEXT", help="start the first restart from this text (K tokens)")
    parser.add_argument("--ascii-only", action="store_true", help="printable ASCII tokens only")
    parser.add_argument("--time-limit", type=float, default=Budget.time_limit, metavar="S",
                        help="stop after S seconds unless a prompt succeeded earlier (default: %(default)s; inf: none)")
    add_run_args(parser)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args) -> None:
    """``fvis invert``: run :func:`invert`, write ``DIR/result.json``, print the best prompts."""
    # the library's settings check every value before the model loads
    prompt = Prompt(length=args.length, prefix=args.prefix, suffix=args.suffix, init=args.init,
                    ascii_only=args.ascii_only)
    budget = Budget(restarts=args.restarts, steps=args.steps, time_limit=args.time_limit)
    method = search_method(args.method, snap=args.snap, lr=args.lr, snap_weight=args.snap_weight)
    targets = target_list(args)
    if bool(targets) == bool(args.neuron):
        raise FvisError("give --target TEXT (or --targets FILE) or --neuron LAYER:INDEX, not both")
    out = check_writable(args.out)
    lm = load_lm(args.model, device=args.device)
    if args.neuron:
        position = args.position if args.position in lang.POSITIONS else _int(args.position, "--position")
        objective = lang.parse_neuron(lm, args.neuron, position)
        runs = [invert(lm, objective=objective, prompt=prompt, method=method, budget=budget, seed=args.seed,
                       progress=not args.quiet)]
    else:
        runs = invert_many(lm, targets, prompt=prompt, method=method, budget=budget, seed=args.seed,
                           progress=not args.quiet)
    data = runs[0].to_json() if len(runs) == 1 else json.dumps({"targets": [r.as_dict() for r in runs]}, indent=2,
                                                               ensure_ascii=False)
    (out / "result.json").write_text(data, encoding="utf-8")
    for inv in runs:
        if len(runs) > 1:
            print(f"target {inv.settings['target']!r}:")
        print_summary(inv, top=5 if len(runs) == 1 else 3)
    inv = runs[0]
    extra = f"; random prompts' median {inv.baseline:.4g}" if inv.baseline is not None else ""
    found = f"; {sum(r.best.success for r in runs)}/{len(runs)} targets found" if len(runs) > 1 else ""
    print(f"{inv.settings['method']}: {inv.steps} steps, {inv.seconds:.1f} s{extra}{found} -> {out}/result.json")


def target_list(args) -> list[str]:
    """``--target`` (repeated) then the lines of ``--targets FILE``; each checked."""
    targets = list(args.target or []) + (read_targets(args.targets) if args.targets else [])
    return check_targets(targets) if targets else []


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FvisError(f"{flag} must be 'last', 'all' or an integer, got {text!r}") from None
