"""make bf16-gap: the sync check's figures after a correct sync and after an update left unsynced (the negative),
in fp32 and in bf16 (trainer.mixed_precision=bf16: bf16 autocast over fp32 masters, engines in bf16), side by side
in one run, to set the bf16 check's threshold from measurement (docs/objectives.md, "bf16").

    make bf16-gap                          # = .venv/bin/python scripts/bf16_gap.py --rounds 5
    make bf16-gap ARGS="--set trainer.lr=1e-3"

Each round: one real RL step (generate, score, update, sync), then 4 held-out prompts x 4 samples scored by the
trainer (synced), then one more update on those groups with random advantages and no sync, and the same prompts
sampled again (stale); then the sync. Writes runs/bench/bf16_gap.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SMALL = ["trainer.prompts_per_step=8", "rollout.n=4", "data.eval_size=16", "rollout.max_new_tokens=48",
         "eval.sets.heldout.size=16", "trainer.lr=1e-4"]


def rounds(precision: str, n: int, config: str, extra: list[str]) -> list[dict]:
    import torch

    from rl.batch.build import build_tokens
    from rl.batch.types import TrainBatch
    from rl.collect.collector import Collector
    from rl.collect.generate import sampling
    from rl.config import load_config
    from rl.data.sampler import EpochSampler
    from rl.run.session import Session
    from rl.sync.parity import logprob_gaps
    from rl.sync.weights import sync_weights
    from rl.train import rl_step
    from rl.trainer.device import autocast
    from rl.trainer.update import policy_step, scoring_of

    cfg = load_config(ROOT / config, SMALL + extra + [f"trainer.mixed_precision={'bf16' if precision == 'bf16' else 'off'}",
                                                     "run.dir=/tmp/purerl-bf16-gap"])
    s = Session.start(cfg)
    out = []
    try:
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), 0))
        prompts = s.eval.head(4)
        four = sampling(cfg.rollout, 4)
        version = 0
        for i in range(n):
            version += 1
            metrics = rl_step(s, collector, version)
            groups = s.pool.generate(prompts.ids, prompts.indices(), four)
            with autocast(s.trainer.device, s.trainer.dtype, sharded=False):  # as the trainer's own passes
                synced = logprob_gaps(s.policy, groups, s.tokenizer.pad_token_id, scoring_of(cfg))
                t = build_tokens(groups, s.tokenizer.pad_token_id)
                batch = TrainBatch(t.input_ids, t.attention_mask, t.response_mask, t.sampler_logps,
                                   torch.randn(len(groups) * 4), t.response_lengths, sampler_logps=t.sampler_logps)
                policy_step(s.policy, s.trainer.optim, batch, cfg)
                stale_groups = s.pool.generate(prompts.ids, prompts.indices(), four)
                stale = logprob_gaps(s.policy, stale_groups, s.tokenizer.pad_token_id, scoring_of(cfg))
            version += 1
            sync_weights(s.sender, s.pool, s.trainer, version)
            row = {"round": i, "step_mean": metrics["rollout/logprob_abs_diff_mean"],
                   "step_max": metrics["rollout/logprob_abs_diff_max"], "synced": synced, "stale": stale}
            print(precision, json.dumps(row), flush=True)
            out.append(row)
    finally:
        s.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides, e.g. trainer.lr=1e-3")
    args = p.parse_args()
    from bench_long import cpu_name

    result = {"cpu": cpu_name(), "config": args.config, "overrides": args.overrides,
              **{prec: rounds(prec, args.rounds, args.config, args.overrides) for prec in args.precisions}}
    print(f"CPU: {result['cpu']}")
    print("| precision | synced mean (max over rounds) | synced max (max) | stale mean (min over rounds) | stale max (min) |")
    print("|---|---|---|---|---|")
    for prec in args.precisions:
        rows = result[prec]
        print(f"| {prec} | {max(r['synced']['mean'] for r in rows):.2e} | {max(r['synced']['max'] for r in rows):.2e} "
              f"| {min(r['stale']['mean'] for r in rows):.2e} | {min(r['stale']['max'] for r in rows):.2e} |")
    out = ROOT / "runs" / "bench" / "bf16_gap.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
