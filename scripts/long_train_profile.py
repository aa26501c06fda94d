"""Why the trainer's forward + backward costs more per token on long answers (docs/benchmarks.md, bench-sweep).

Times one forward + backward of `--rows` sequences of `--tokens` tokens on the sweep's large MoE, for each
experts implementation and attention implementation asked for, interleaved, best of `--rounds`; then the
torch.profiler table of the first variant.

    .venv/bin/python scripts/long_train_profile.py --tokens 1060 --rows 8
    .venv/bin/python scripts/long_train_profile.py --experts purerl --tokens 260 --bf16   # where bf16 time goes
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import profile

from rl.trainer.forward import Scoring, token_logprobs
from rl.trainer.policy import load_policy


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/bench-moe-large")
    p.add_argument("--experts", default="purerl,grouped_mm", help="model.experts_implementation values")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1060)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--padding", type=int, default=0, help="right padding in every other row (as a real batch has)")
    p.add_argument("--bf16", action="store_true", help="under bf16 autocast, as trainer.mixed_precision=bf16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    models = {e: load_policy(args.model, "float32", experts=e) for e in args.experts.split(",")}
    ids = torch.randint(3, 400, (args.rows, args.tokens), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, args.tokens - args.padding :] = 0

    def step(model) -> float:
        t = time.perf_counter()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            fwd = token_logprobs(model, ids, mask, Scoring(entropy="value"), with_router=True)
        fwd.logps.sum().backward()
        return time.perf_counter() - t

    best = {e: float("inf") for e in models}
    for _ in range(args.rounds):
        for e, m in models.items():
            best[e] = min(best[e], step(m))
    tokens = args.rows * args.tokens
    for e, s in best.items():
        print(f"experts={e}{' (bf16 autocast)' if args.bf16 else ''}: {s:.2f} s per forward + backward of {args.rows} x {args.tokens} ({s / tokens * 1e3:.3f} ms/token)")
    first = next(iter(models.values()))
    with profile() as prof:
        step(first)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
