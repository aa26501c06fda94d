"""The trainer's update alone, with the experts path and sequence packing on and off (docs/benchmarks.md).

    make bench-trainer        # = .venv/bin/python scripts/bench_trainer.py

One synthetic 64-row batch shaped like `make bench`'s (prompts of 22-26 tokens, answers of 3-38, about 30%
padding; the tokens are random: only the shapes matter for time). Four trainers from configs/tiny.yaml, one per
variant, run `Trainer.update` and the reference forward in interleaved rounds; medians of the rounds after the first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rl.batch.types import TrainBatch
from rl.config import load_config
from rl.trainer.rank import Trainer

VARIANTS = {
    "neither": ["trainer.pack_sequences=false", "model.experts_implementation=grouped_mm"],
    "experts": ["trainer.pack_sequences=false"],
    "packing": ["model.experts_implementation=grouped_mm"],
    "both (default)": [],
}


def synthetic_batch(rows: int, seed: int = 1) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    prompt = 22 + torch.randint(0, 5, (rows,), generator=g)
    answer = torch.clamp((torch.randn(rows, generator=g) * 7 + 16).long(), 3, 38)
    lengths = prompt + answer
    width = int(lengths.max())
    attention = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.randint(3, 400, (rows, width), generator=g) * attention
    mask = torch.zeros(rows, width - 1, dtype=torch.bool)
    for i in range(rows):
        mask[i, prompt[i] - 1 : lengths[i] - 1] = True
    old = torch.where(mask, -2.0, 0.0)
    return TrainBatch(ids, attention, mask, old, torch.randn(rows, generator=g), answer, ref_logps=old.clone(),
                      sampler_logps=old.clone())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    batch = synthetic_batch(args.rows)
    base = "models/tiny-moe-base"
    trainers = {k: Trainer(load_config("configs/tiny.yaml", v + ["trainer.threads=2"]), base, base)
                for k, v in VARIANTS.items()}
    update = {k: [] for k in trainers}
    reference = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for k, t in trainers.items():
            start = time.perf_counter()
            t.update(batch)
            update[k].append(time.perf_counter() - start)
            start = time.perf_counter()
            t.logprobs(batch.input_ids, batch.attention_mask, "reference")
            reference[k].append(time.perf_counter() - start)
    print(f"{args.rows} rows, {batch.input_ids.numel()} positions, {int(batch.attention_mask.sum())} tokens")
    first = statistics.median(update["neither"][1:])
    for k in trainers:
        u, r = statistics.median(update[k][1:]), statistics.median(reference[k][1:])
        print(f"{k:16s} update {u:.3f} s ({first / u:.2f}x)   reference forward {r:.3f} s")


if __name__ == "__main__":
    main()
