"""The R1-Zero loop: prompts -> rollout groups -> rewards -> advantages -> policy update -> weight sync.

`python -m rl.train --config configs/tiny.yaml rollout.n=8 trainer.lr=1e-5`
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from rl.advantages import get_advantage
from rl.batch import build_batch
from rl.config import Config, ConfigError, load_config
from rl.data.sampler import EpochSampler
from rl.evaluate import heldout_accuracy, sampling_dict
from rl.logprobs import batched_logprobs
from rl.outputs import MetricsLog, make_run_dir, write_summary
from rl.parity import max_logprob_gap
from rl.policy import save_checkpoint
from rl.scoring import reward_metrics, score_groups
from rl.session import Session
from rl.step import make_optimizer, policy_step
from rollout.weight_sync import checkpoint_tensors


def rl_step(s: Session, optimizer, scheduler, indices: list[int]) -> dict[str, float]:
    """One rollout batch and one optimizer step; returns the step's metrics."""
    cfg, times = s.cfg, {}
    t = time.perf_counter()
    groups = s.pool.generate([s.train_prompt_ids[i] for i in indices], [s.train_rows[i].index for i in indices],
                             sampling_dict(cfg, cfg.rollout.n))
    times["time/generate"] = time.perf_counter() - t

    t = time.perf_counter()
    scored = score_groups(groups, {r.index: r for r in (s.train_rows[i] for i in indices)}, cfg.reward)
    times["time/reward"] = time.perf_counter() - t

    t = time.perf_counter()
    advantages = get_advantage(cfg.algo.advantage)(scored.total, scored.valid)  # (P, G)
    batch = build_batch(groups, advantages, scored.valid, s.tokenizer.pad_token_id)
    if s.reference is not None:
        batch.ref_logps = batched_logprobs(s.reference, batch.input_ids, batch.attention_mask,
                                           cfg.rollout.temperature, cfg.trainer.micro_batch_size)
    train_metrics = policy_step(
        s.policy, optimizer, scheduler, batch, cfg.algo, micro_batch_size=cfg.trainer.micro_batch_size,
        temperature=cfg.rollout.temperature, grad_clip=cfg.trainer.grad_clip, max_new_tokens=cfg.rollout.max_new_tokens,
    )
    times["time/train"] = time.perf_counter() - t

    t = time.perf_counter()
    s.pool.update_weights(checkpoint_tensors(s.policy))
    times["time/sync"] = time.perf_counter() - t

    lengths = batch.response_lengths.float()
    n_tokens = int(lengths.sum())
    finish = [c.finish_reason for g in groups for c in g.completions]
    return {
        **reward_metrics(scored, cfg.reward.accuracy_verifier),
        "response/len_mean": float(lengths.mean()),
        "response/len_max": int(lengths.max()),
        "response/truncated_frac": finish.count("length") / len(finish),
        **train_metrics,
        "rollout/tokens": n_tokens,
        "rollout/tokens_per_s": n_tokens / max(times["time/generate"], 1e-9),
        **times,
        "time/step": sum(times.values()),
        "data/indices": [s.train_rows[i].index for i in indices],
    }


def final_parity(s: Session) -> float:
    """After the last sync: sample a few groups and compare the engine's logprobs with the trainer's."""
    k = min(4, len(s.eval_rows))
    groups = s.pool.generate(s.eval_prompt_ids[:k], [r.index for r in s.eval_rows[:k]], sampling_dict(s.cfg, s.cfg.rollout.n))
    return max_logprob_gap(s.policy, groups, s.cfg.rollout.temperature, s.tokenizer.pad_token_id)


def train(cfg: Config) -> dict:
    start = time.time()
    run_dir = make_run_dir(cfg)
    print(f"run dir: {run_dir}", flush=True)
    torch.manual_seed(cfg.trainer.seed)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    s = Session.start(cfg)
    summary: dict = {"run_dir": str(run_dir), "model": cfg.model.path}
    if cfg.run.eval_before:
        summary["base_accuracy"] = heldout_accuracy(s.pool, s.eval_prompt_ids, s.eval_rows, cfg)
        print(f"held-out accuracy before training: {summary['base_accuracy']:.3f} ({len(s.eval_rows)} problems)", flush=True)
    t = cfg.trainer
    optimizer, scheduler = make_optimizer(s.policy, t.lr, t.betas, t.weight_decay, t.warmup_steps)
    sampler = EpochSampler(len(s.train_rows), cfg.data.seed)
    log = MetricsLog(run_dir, t.steps)
    gaps = []
    for step in range(1, t.steps + 1):
        metrics = {"step": step, **rl_step(s, optimizer, scheduler, sampler.next(t.prompts_per_step))}
        if step > 1:  # this step's forward pass ran on weights the engines received by the last sync
            gaps.append(metrics["rollout/logprob_abs_diff_max"])
        log.write(metrics)
    if t.steps > 0:
        gaps.append(final_parity(s))
    summary["sync_max_abs_logprob_diff"] = max(gaps) if gaps else None
    if cfg.run.eval_after:
        summary["final_accuracy"] = heldout_accuracy(s.pool, s.eval_prompt_ids, s.eval_rows, cfg)
        print(f"held-out accuracy after training: {summary['final_accuracy']:.3f}", flush=True)
    if cfg.run.save_checkpoint:
        summary["checkpoint"] = str(save_checkpoint(s.policy, s.tokenizer, run_dir / "checkpoint"))
    summary.update(steps=t.steps, eval_problems=len(s.eval_rows), wall_seconds=round(time.time() - start, 1))
    write_summary(run_dir, summary)
    s.close()
    print(f"done: {run_dir}/summary.json", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.n=16 trainer.lr=1e-5")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg)
    except ValueError as e:  # ModelPathError, DatasetError, registry errors: the message names what is wrong
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
