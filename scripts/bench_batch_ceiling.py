"""How much can batching save per image on this CPU? The ceiling for the atlas's "batched vs alone" ratio.

The atlas renders each cell as one item of a batch (issue 20 asks for >= 4x less time per cell than
rendering each cell alone). Whatever fvis does, a batched step cannot cost less per image than the
network's own forward + backward at that batch size. This script times that bare step (EfficientNet-Lite0
truncated after ``--layer``, a fixed direction objective, input gradient only, channels-last input as
fvis feeds it on the CPU) at batch 1 and at ``--batch``, rounds alternating, and reports the ratio of
per-image costs: the most batching can save for the network's share of a rendering step.

``--part lm`` asks the same of prompt inversion (issue 21: a batch of targets vs one at a time): one step
of one item scores 65 candidate prompts in one no-grad forward of SmolLM2-135M (the last position's logits
only, as fvis runs it); this times that forward for 65 candidates and for ``--lm-items`` x 65, per candidate.

    python scripts/bench_batch_ceiling.py [--layer _blocks.10] [--size 96] [--batch 32] [--steps 12] [--rounds 5] [--out results/atlas/batch_ceiling.md]
    python scripts/bench_batch_ceiling.py --part lm [--lm-items 8] [--lm-tokens 4] [--out results/lm/batch_ceiling.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import fvis
from fvis.hooks import Capture


def seconds_per_step(model, layer: str, batch: int, size: int, steps: int) -> float:
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    with Capture(model, [layer]) as cap:
        cap.plan(x[:1].detach())
        channels = cap.forward(x[:1].detach())[layer].shape[1]
        direction = torch.randn(channels, generator=torch.Generator().manual_seed(1))[None, :, None, None]

        def step():
            acts = cap.forward(x.contiguous(memory_format=torch.channels_last))
            (acts[layer] * direction).sum().backward()
            x.grad = None

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps


def lm_seconds_per_candidate(lm, candidates: int, tokens: int, repeats: int) -> float:
    ids = torch.randint(0, lm.net.config.vocab_size, (candidates, tokens), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lm.net(input_ids=ids, use_cache=False, logits_to_keep=1)
        start = time.perf_counter()
        for _ in range(repeats):
            lm.net(input_ids=ids, use_cache=False, logits_to_keep=1)
    return (time.perf_counter() - start) / repeats / candidates


def lm_part(args) -> list[str]:
    from fvis.lm import load_lm

    lm = load_lm("smollm2-135m")
    one, many = [], []
    big = 65 * args.lm_items
    for r in range(args.rounds):
        for n in ((65, big) if r % 2 == 0 else (big, 65)):
            s = lm_seconds_per_candidate(lm, n, args.lm_tokens, 2)
            (one if n == 65 else many).append(s)
            print(f"round {r + 1}: {n:4d} candidates: {s * 1000:.2f} ms per candidate", flush=True)
    a, b = statistics.median(one), statistics.median(many)
    return [
        "# What batching can save per candidate prompt: one item's scoring forward vs a batch of items",
        "",
        f"SmolLM2-135M, {args.lm_tokens}-token candidates, no gradient, last position's logits only "
        f"(`logits_to_keep=1`, as fvis scores candidates); CPU, {torch.get_num_threads()} thread(s), torch "
        f"{torch.__version__}. {args.rounds} rounds (order alternating), 2 timed forwards each after one untimed; medians.",
        "",
        "| candidates in one forward | ms per candidate (median) | rounds |",
        "|---:|---:|---|",
        f"| 65 (one item's step) | {a * 1000:.2f} | {', '.join(f'{s * 1000:.2f}' for s in one)} |",
        f"| {big} ({args.lm_items} items' steps) | {b * 1000:.2f} | {', '.join(f'{s * 1000:.2f}' for s in many)} |",
        "",
        f"**Batching saves at most {a / b:.2f}x per candidate in the scoring forward**, which is most of a step's "
        "time; the rest (one forward and backward of the item's own prompt, snapping, bookkeeping) is per item too.",
        "",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="_blocks.10")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--part", choices=["image", "lm"], default="image")
    ap.add_argument("--lm-items", type=int, default=8, help="--part lm: items in the batched forward")
    ap.add_argument("--lm-tokens", type=int, default=4, help="--part lm: tokens per candidate prompt")
    ap.add_argument("--out", type=Path, default=None, help="default: results/atlas/ or results/lm/batch_ceiling.md")
    args = ap.parse_args(argv)
    fvis.tune_allocator()
    command = " ".join(["python scripts/bench_batch_ceiling.py", *sys.argv[1:]])
    if args.part == "lm":
        out = args.out or Path("results/lm/batch_ceiling.md")
        lines = lm_part(args)
        lines[1:1] = ["", f"Command: `{command}`"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines))
        print(f"wrote {out}")
        return 0
    args.out = args.out or Path("results/atlas/batch_ceiling.md")
    model = fvis.load("efficientnet-lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    alone, batched = [], []
    for r in range(args.rounds):
        order = (1, args.batch) if r % 2 == 0 else (args.batch, 1)
        for b in order:
            s = seconds_per_step(model, args.layer, b, args.size, args.steps) / b
            (alone if b == 1 else batched).append(s)
            print(f"round {r + 1}: batch {b:3d}: {s * 1000:.2f} ms per image-step", flush=True)
    a, bt = statistics.median(alone), statistics.median(batched)
    lines = [
        "# What batching can save per image: the network's own step at batch 1 vs a batch",
        "",
        f"Command: `{command}`",
        "",
        f"EfficientNet-Lite0 truncated after `{args.layer}`, {args.size}x{args.size} inputs, a fixed direction "
        f"objective, input gradient only, channels-last input; CPU, {torch.get_num_threads()} thread(s), torch "
        f"{torch.__version__}. {args.rounds} rounds (order alternating) of {args.steps} timed steps after one "
        "untimed; medians.",
        "",
        "| batch | ms per image per step (median) | rounds |",
        "|---:|---:|---|",
        f"| 1 | {a * 1000:.2f} | {', '.join(f'{s * 1000:.2f}' for s in alone)} |",
        f"| {args.batch} | {bt * 1000:.2f} | {', '.join(f'{s * 1000:.2f}' for s in batched)} |",
        "",
        f"**Batching saves at most {a / bt:.2f}x per image in the network's share of a step.** A rendered cell's "
        "step is this network step plus fvis's own per-step work (parameterization, transforms, optimizer); "
        "batching can also spread that work's fixed part over the batch, but not the network's.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
