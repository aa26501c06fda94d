"""`make moe-bias`: does keeping DeepSeek-V3's correction bias alive during RL help? (issue #20, docs/objectives.md)

Trains configs/tiny-dsv3.yaml once per (moe.bias_update_rate, moe.routing_replay) cell, same seed and data, and
tabulates load balance, the trainer/sampler mismatch, routing agreement, the bias and held-out accuracy.
Writes runs/moe_bias/table.json and prints a markdown table.
`python scripts/moe_bias.py --rates 0,0.001,0.01 --replay off,vllm [--set trainer.steps=20 ...]`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = [  # (table header, cell key)
    ("rate", "bias_update_rate"), ("replay", "routing_replay"), ("bias_abs_mean (end)", "bias_abs_mean"),
    ("expert_load_cv (first 5 / last 5 steps)", "load_cv"), ("max_load_ratio (last 5)", "max_load_ratio"),
    ("routing_agreement", "routing_agreement"), ("logprob_abs_diff mean / max", "logprob_diff"),
    ("ppl_ratio", "ppl_ratio"), ("held-out before -> after", "accuracy"),
]


def cell_summary(lines: list[dict], summary: dict, rate: float, replay: str) -> dict:
    """One cell of the table from a run's metrics.jsonl lines and summary.json."""
    steps = [m for m in lines if "moe/expert_load_cv" in m]

    def avg(key: str, rows: list[dict]) -> float:
        return mean(m[key] for m in rows)

    return {
        "bias_update_rate": rate, "routing_replay": replay, "steps": len(steps),
        "bias_abs_mean": steps[-1].get("moe/bias_abs_mean", 0.0),
        "load_cv_first5": avg("moe/expert_load_cv", steps[:5]), "load_cv_last5": avg("moe/expert_load_cv", steps[-5:]),
        "max_load_ratio_last5": avg("moe/max_load_ratio", steps[-5:]),
        "dead_experts_last5": avg("moe/dead_experts", steps[-5:]),
        "routing_agreement": avg("moe/routing_agreement", steps),
        "logprob_abs_diff_mean": avg("rollout/logprob_abs_diff_mean", steps),
        "logprob_abs_diff_max": max(m["rollout/logprob_abs_diff_max"] for m in steps),
        "ppl_ratio": avg("rollout/ppl_ratio", steps),
        "base_accuracy": summary["base_accuracy"], "final_accuracy": summary["final_accuracy"],
        "sync_max_abs_logprob_diff": summary["sync_max_abs_logprob_diff"], "wall_seconds": summary["wall_seconds"],
    }


def markdown(cells: list[dict]) -> str:
    def row(c: dict) -> list[str]:
        return [f"{c['bias_update_rate']:g}", c["routing_replay"], f"{c['bias_abs_mean']:.4f}",
                f"{c['load_cv_first5']:.3f} / {c['load_cv_last5']:.3f}", f"{c['max_load_ratio_last5']:.2f}",
                f"{c['routing_agreement']:.4f}", f"{c['logprob_abs_diff_mean']:.1e} / {c['logprob_abs_diff_max']:.1e}",
                f"{c['ppl_ratio']:.5f}", f"{c['base_accuracy']:.3f} -> {c['final_accuracy']:.3f}"]

    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row(c)) + " |" for c in cells])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny-dsv3.yaml")
    p.add_argument("--rates", default="0,0.001,0.01", help="moe.bias_update_rate values, comma-separated")
    p.add_argument("--replay", default="off,vllm", help="moe.routing_replay values, comma-separated")
    p.add_argument("--out", default="runs/moe_bias")
    p.add_argument("--set", nargs="*", default=[], help="further config overrides for every cell")
    args = p.parse_args()

    from rl.config import load_config
    from rl.tasks.build import ensure
    from rl.train import train

    out, cells = Path(args.out), []
    for replay in args.replay.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            run_dir = out / f"rate{rate:g}-replay-{replay}"
            cfg = load_config(args.config, [f"moe.bias_update_rate={rate}", f"moe.routing_replay={replay}",
                                             "log.plot=false", "run.save_checkpoint=false", f"run.dir={run_dir}",
                                             *args.set])
            ensure(cfg.model.path)
            summary = train(cfg)
            lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            cells.append(cell_summary(lines, summary, rate, replay))
            (out / "table.json").write_text(json.dumps({"config": args.config, "set": args.set, "cells": cells}, indent=2))
    print(markdown(cells))


if __name__ == "__main__":
    main()
