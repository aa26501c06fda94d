"""torch.profiler table of the trainer's forward + backward on the embedded model (docs/benchmarks.md, train_mfu).

    .venv/bin/python scripts/profile_train.py                      # rl/experts.py, 64 x 60 tokens
    .venv/bin/python scripts/profile_train.py --experts grouped_mm # transformers' grouped_mm path
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import profile

from rl.trainer.policy import load_policy


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/tiny-moe-base")
    p.add_argument("--experts", default="purerl", help="model.experts_implementation")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_policy(args.model, "float32", experts=args.experts)
    ids = torch.randint(0, model.config.vocab_size, (args.rows, args.tokens), generator=torch.Generator().manual_seed(0))

    def step():
        model.zero_grad()
        model(input_ids=ids).logits.logsumexp(-1).mean().backward()

    for _ in range(3):
        step()
    with profile() as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
