"""Held-out accuracy: one sample per problem, with the training sampling settings.

`python -m rl.evaluate --config configs/tiny.yaml [--checkpoint runs/x/checkpoint]`
"""

from __future__ import annotations

import argparse
import json
import sys

from rl.config import Config, ConfigError, RewardConfig, load_config
from rl.data import PromptRow
from rl.scoring import score_groups
from rollout.pool import RolloutPool


def sampling_dict(cfg: Config, n: int) -> dict:
    r = cfg.rollout
    return {"n": n, "temperature": r.temperature, "top_p": r.top_p, "max_new_tokens": r.max_new_tokens, "stop": list(r.stop)}


def heldout_accuracy(pool: RolloutPool, prompt_ids: list[list[int]], rows: list[PromptRow], cfg: Config) -> float:
    """Share of problems whose single sample gets the full score from `reward.accuracy_verifier`."""
    groups = pool.generate(prompt_ids, [r.index for r in rows], sampling_dict(cfg, 1))
    only_acc = RewardConfig(terms=[t for t in cfg.reward.terms if t.verifier == cfg.reward.accuracy_verifier],
                            workers=cfg.reward.workers, timeout_s=cfg.reward.timeout_s,
                            accuracy_verifier=cfg.reward.accuracy_verifier)
    scored = score_groups(groups, {r.index: r for r in rows}, only_acc)
    return float((scored.terms[cfg.reward.accuracy_verifier] >= 1.0).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--checkpoint", default=None, help="model folder to score; defaults to model.path")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    from rl.session import Session

    try:
        cfg = load_config(args.config, args.overrides)
        if args.checkpoint:
            cfg.model.path = args.checkpoint
        session = Session.start(cfg, trainable=False)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    acc = heldout_accuracy(session.pool, session.eval_prompt_ids, session.eval_rows, cfg)
    result = {"model": cfg.model.path, "eval": cfg.data.eval, "problems": len(session.eval_rows), "accuracy": acc}
    print(json.dumps(result))
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
