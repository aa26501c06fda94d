"""`make eval`: a model's held-out accuracy (one sample per problem, the training sampling settings) and the
eval sets' figures (mean@n, pass@k, maj@k, greedy; rl/eval/), said as `make train` says them and written to
DIR/eval.json, with the per-problem results in DIR/eval/<set>-step0.jsonl and the libraries' output in DIR/logs.

`python -m rl.evaluate --config configs/tiny.yaml [--checkpoint runs/x/checkpoint] [--out DIR] [overrides]`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from rl.collect.generate import generate_round, sampling
from rl.config import Config, RewardConfig, load_config
from rl.data import PromptSet
from rl.errors import UserError
from rl.eval.run import run_evals
from rl.run.console import say, third_party_to
from rl.run.outputs import say_eval_table
from rl.storage import fetch


def accuracy_only(reward: RewardConfig) -> RewardConfig:
    """Each data source's accuracy verifier alone: all that held-out accuracy needs scored."""
    def only(terms, name):
        return [t for t in terms if t.verifier == name]

    sources = {k: dataclasses.replace(s, terms=only(s.terms, s.accuracy_verifier)) for k, s in reward.sources.items()}
    return dataclasses.replace(reward, terms=only(reward.terms, reward.accuracy_verifier), sources=sources)


def heldout_accuracy(pool, prompts: PromptSet, cfg: Config) -> float:
    """Share of problems whose single sample gets the full score from its data source's accuracy verifier (the
    samples seeded alike at every evaluation: rollout.request_seeds)."""
    scored = generate_round(pool, prompts, sampling(cfg.rollout, 1, "heldout"), accuracy_only(cfg.reward)).scored
    return float(scored.correct.float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--checkpoint", default=None, help="model folder to score; defaults to model.path")
    p.add_argument("--out", type=Path, default=None, help="folder for eval.json, the per-problem results and the "
                   "libraries' logs (default: runs/eval-<timestamp>)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        checkpoint = str(fetch(args.checkpoint)) if args.checkpoint else None  # a URI: downloaded into runs/.remote
        cfg = load_config(args.config, args.overrides + ([f"model.path={checkpoint}"] if checkpoint else []))
        out = args.out or Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")
        result = evaluate(cfg, out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    say(f"done: {out / 'eval.json'}")
    return 0


def evaluate(cfg: Config, out: Path) -> dict:
    """The held-out accuracy and the eval sets' figures of cfg.model.path, said as `make train` says them; vLLM's,
    Ray's and the other libraries' output goes to out/logs (log.verbose keeps it on the console)."""
    from rl.run.session import Session

    out.mkdir(parents=True, exist_ok=True)
    say(f"eval: {cfg.model.path}; held-out {cfg.data.eval} ({cfg.data.eval_size}); eval sets "
        f"{', '.join(cfg.eval.sets) or 'none'}; output {out}")
    with third_party_to(None if cfg.log.verbose else out / "logs"):
        session = Session.start(cfg, trainable=False)
        try:
            acc = heldout_accuracy(session.pool, session.eval, cfg)
            sets = run_evals(session.pool, session.eval_sets, cfg, 0, out)
        finally:
            session.close()
    say(f"held-out accuracy: {acc:.3f} ({len(session.eval)} problems)")
    figures = {k.removeprefix("eval/"): v for k, v in sets.items()}
    say_eval_table({"0": figures} if figures else {})
    return {"model": cfg.model.path, "eval": cfg.data.eval, "problems": len(session.eval), "accuracy": acc,
            "sets": figures}


if __name__ == "__main__":
    sys.exit(main())
