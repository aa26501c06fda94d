"""`make eval`: a model's held-out accuracy (one sample per problem, the training sampling settings) and the
eval sets' figures (mean@n, pass@k, maj@k, greedy; rl/eval/), as one JSON object.

`python -m rl.evaluate --config configs/tiny.yaml [--checkpoint runs/x/checkpoint] [--out DIR] [overrides]`
(--out also writes the per-problem results, DIR/eval/<set>-step0.jsonl).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rl.collect.generate import generate_round, sampling
from rl.config import Config, RewardConfig, load_config
from rl.data import PromptSet
from rl.errors import UserError
from rl.eval.run import run_evals


def accuracy_only(reward: RewardConfig) -> RewardConfig:
    """Each data source's accuracy verifier alone: all that held-out accuracy needs scored."""
    def only(terms, name):
        return [t for t in terms if t.verifier == name]

    sources = {k: dataclasses.replace(s, terms=only(s.terms, s.accuracy_verifier)) for k, s in reward.sources.items()}
    return dataclasses.replace(reward, terms=only(reward.terms, reward.accuracy_verifier), sources=sources)


def heldout_accuracy(pool, prompts: PromptSet, cfg: Config) -> float:
    """Share of problems whose single sample gets the full score from its data source's accuracy verifier."""
    scored = generate_round(pool, prompts, sampling(cfg.rollout, 1), accuracy_only(cfg.reward)).scored
    return float(scored.correct.float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--checkpoint", default=None, help="model folder to score; defaults to model.path")
    p.add_argument("--out", type=Path, default=None, help="write the per-problem results under this folder")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    from rl.run.session import Session

    try:
        cfg = load_config(args.config, args.overrides + ([f"model.path={args.checkpoint}"] if args.checkpoint else []))
        session = Session.start(cfg, trainable=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        acc = heldout_accuracy(session.pool, session.eval, cfg)
        sets = run_evals(session.pool, session.eval_sets, cfg, 0, args.out)
        print(json.dumps({"model": cfg.model.path, "eval": cfg.data.eval, "problems": len(session.eval), "accuracy": acc,
                          "sets": {k.removeprefix("eval/"): v for k, v in sets.items()}}))
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
