"""The R1-Zero loop: prompts -> rollout groups -> rewards -> advantages -> policy update -> weight sync.

`python -m rl.train --config configs/tiny.yaml rollout.n=8 trainer.lr=1e-5`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from rl.advantages import get_advantage
from rl.batch import build_batch
from rl.checkpoint import complete_checkpoints, load_train_state, save_train_state
from rl.config import Config, ConfigError, load_config
from rl.dapo import apply_overlong, filter_uniform_groups
from rl.data.sampler import EpochSampler
from rl.evaluate import heldout_accuracy, sampling_dict
from rl.kl import kl_penalty
from rl.outputs import MetricsLog, make_run_dir, write_summary
from rl.placement import PlacementError
from rl.policy import save_checkpoint
from rl.scoring import ScoredGroups, cat_scored, reward_metrics, score_groups
from rl.session import Session
from rl.step import mismatch_metrics, truncated_is_weight
from rollout.pool import EngineLost, Pending
from rollout.types import RolloutGroup


@dataclass
class Prefetch:
    """rollout.async: the next step's first round, submitted before this step trains (one step off-policy)."""

    indices: list[int]
    pending: Pending
    cursor: dict  # the data cursor before these indices were drawn: what a checkpoint taken meanwhile records
    groups: list[RolloutGroup] | None = None
    wait_s: float = 0.0


def launch(s: Session, sampler: EpochSampler) -> Prefetch:
    """Draws the next step's prompts and submits them; the Prefetch keeps the cursor from before the draw."""
    cursor = sampler.state_dict()
    indices = sampler.next(s.cfg.trainer.prompts_per_step)
    return Prefetch(indices, submit(s, indices), cursor)


def submit(s: Session, indices: list[int]) -> Pending:
    return s.pool.submit([s.train_prompt_ids[i] for i in indices], [s.train_rows[i].index for i in indices],
                         sampling_dict(s.cfg, s.cfg.rollout.n))


def generate_and_score(s: Session, indices: list[int], prefetched: Prefetch | None = None,
                       ) -> tuple[list[RolloutGroup], ScoredGroups, dict]:
    """Rollout groups for the training rows at `indices` (or the prefetched ones), and their rewards."""
    cfg, times = s.cfg, {}
    t = time.perf_counter()
    if prefetched is None:
        groups = s.pool.wait(submit(s, indices))
        times["time/generate"] = time.perf_counter() - t
    else:  # generated while the last step trained; only the wait for it counts
        indices, groups = prefetched.indices, prefetched.groups
        times["time/generate"] = prefetched.wait_s
    t = time.perf_counter()
    scored = score_groups(groups, {r.index: r for r in (s.train_rows[i] for i in indices)}, cfg.reward)
    times["time/reward"] = time.perf_counter() - t
    return groups, scored, times


def collect(s: Session, draw: Callable[[int], list[int]], prefetched: Prefetch | None = None,
            ) -> tuple[list[RolloutGroup], ScoredGroups, dict]:
    """One step's rollout groups. With algo.dynamic_sampling, groups with all-equal rewards are dropped and
    more prompts drawn until trainer.prompts_per_step groups are kept or the round cap is hit (DAPO).
    """
    want, algo = s.cfg.trainer.prompts_per_step, s.cfg.algo
    groups, scored, times = generate_and_score(s, [] if prefetched else draw(want), prefetched)
    info = {**times, "data/dropped_indices": []}
    if not algo.dynamic_sampling:
        return groups, scored, info
    kept_groups, kept_scores, rounds = [], [], 0
    while True:
        keep = filter_uniform_groups(scored.total, scored.valid).tolist()
        rows = [i for i, k in enumerate(keep) if k][: want - len(kept_groups)]
        kept_groups += [groups[i] for i in rows]
        kept_scores.append(scored.take(rows))
        info["data/dropped_indices"] += [g.prompt_index for i, g in enumerate(groups) if i not in rows]
        if len(kept_groups) >= want or rounds >= algo.dynamic_sampling_max_rounds:
            break
        rounds += 1
        groups, scored, more = generate_and_score(s, draw(want - len(kept_groups)))
        for k, v in more.items():
            info[k] += v
    info["sampling/rounds"] = rounds + 1
    if not kept_groups:  # nothing carried signal: train on the last round (zero advantages), not "dropped"
        trained = {g.prompt_index for g in groups}
        info["data/dropped_indices"] = [i for i in info["data/dropped_indices"] if i not in trained]
        return groups, scored, info
    return kept_groups, cat_scored(kept_scores), info


def rl_step(s: Session, draw: Callable[[int], list[int]], prefetched: Prefetch | None = None,
            prefetch_next: Callable[[], Prefetch] | None = None) -> tuple[dict, Prefetch | None]:
    """One rollout batch, then algo.epochs x mini-batches of optimizer steps, then the weight sync.

    `draw(n)` gives the next n training-row positions (the data cursor). rollout.async: `prefetched` holds this
    step's first round, generated during the last step; `prefetch_next()` submits the next step's before this
    one trains, and the returned Prefetch carries it to the next call.
    """
    cfg, algo, trainer = s.cfg, s.cfg.algo, s.trainer
    groups, scored, info = collect(s, draw, prefetched)
    info["rollout/staleness"] = 1 if prefetched is not None else 0  # optimizer steps between sampling and training
    upcoming = prefetch_next() if prefetch_next is not None else None

    t = time.perf_counter()
    P, G = scored.total.shape
    batch = build_batch(groups, torch.zeros(P, G), scored.valid, s.tokenizer.pad_token_id)
    lengths = batch.response_lengths.view(P, G)
    truncated = torch.tensor([c.finish_reason == "length" for g in groups for c in g.completions]).view(P, G)
    rewards, valid = apply_overlong(algo.overlong, scored.total, scored.valid, lengths, truncated,
                                    max_len=cfg.rollout.max_new_tokens, buffer_len=algo.overlong_buffer,
                                    penalty=algo.overlong_penalty)
    batch.mask &= valid.reshape(-1, 1)
    extra = {}
    if algo.kl_coef > 0:
        t_ref = time.perf_counter()
        batch.ref_logps, _ = trainer.logprobs(batch.input_ids, batch.attention_mask, "reference")
        extra["time/reference"] = time.perf_counter() - t_ref
        if algo.kl_in_reward:  # log pi from the sampler: the policy the tokens came from
            seq_kl = torch.where(batch.mask, kl_penalty(batch.sampler_logps, batch.ref_logps, algo.kl_estimator), 0.0).sum(-1)
            rewards = rewards - algo.kl_coef * seq_kl.view(P, G)
            extra["reward/kl_penalty"] = float(algo.kl_coef * seq_kl[batch.mask.any(-1)].mean()) if batch.mask.any() else 0.0
    batch.advantages = get_advantage(algo.advantage)(rewards, valid).reshape(-1).float()

    if cfg.moe.routing_replay == "vllm":
        if batch.sampler_experts is None:
            raise RuntimeError("moe.routing_replay=vllm: the engines returned no routing for this batch")
        batch.routed_experts = batch.sampler_experts
    if algo.old_logprobs == "trainer":
        replay_trainer = cfg.moe.routing_replay == "trainer"
        batch.old_logps, routing = trainer.logprobs(batch.input_ids, batch.attention_mask, "policy", replay_trainer)
        if replay_trainer:
            batch.routed_experts = routing
        elif algo.tis_cap is not None:
            batch.is_weight = truncated_is_weight(batch.old_logps, batch.sampler_logps, batch.mask, algo.tis_cap)
    train_metrics, before_logps, before_rows = trainer.update(batch)
    if algo.old_logprobs == "trainer":  # the recomputed logprobs cover every row, before any step
        before_logps, before_rows = batch.old_logps, torch.ones(len(batch), dtype=torch.bool)
    gap = mismatch_metrics(before_logps, batch.sampler_logps, batch.mask & before_rows[:, None])
    info["time/train"] = time.perf_counter() - t

    if upcoming is not None:  # the engines finish the next round before they can load new weights
        t = time.perf_counter()
        try:
            upcoming.groups = s.pool.wait(upcoming.pending)
        except EngineLost as e:
            e.cursor = upcoming.cursor  # this step did train; the next one's prompts were not consumed
            raise
        upcoming.wait_s = time.perf_counter() - t
    t = time.perf_counter()
    engine_s = s.pool.update_weights(trainer.weights())
    info["time/sync"] = time.perf_counter() - t
    info["sync/engine_load_s"] = engine_s  # the slowest engine's in-place load, inside time/sync
    info["sync/bytes"] = trainer.weight_bytes() * len(s.pool.live())  # moved from the trainer to the engines
    info["sync/gb_per_s"] = info["sync/bytes"] / max(info["time/sync"], 1e-9) / 1e9

    lens = batch.response_lengths.float()
    n_tokens = int(lens.sum())
    # time/train covers reference, old-logprob recompute, forward/backward and optimizer; these are parts of it
    times = {k: v for k, v in info.items() if k.startswith("time/")}
    return {
        **reward_metrics(scored, cfg.reward.accuracy_verifier),
        **extra,
        "response/len_mean": float(lens.mean()),
        "response/len_max": int(lens.max()),
        "response/truncated_frac": float(truncated.float().mean()),
        **train_metrics,
        **gap,
        "rollout/tokens": n_tokens,
        "train/tokens": int(batch.attention_mask.sum()),
        "rollout/tokens_per_s": n_tokens / max(info["time/generate"], 1e-9),
        "rollout/engine_restarts": s.pool.restarts,
        **times,
        "time/step": sum(times.values()),
        "data/indices": [g.prompt_index for g in groups],
        **{k: v for k, v in info.items() if not k.startswith("time/")},
    }, upcoming


def final_parity(s: Session) -> float:
    """After the last sync: sample a few groups and compare the engine's logprobs with the trainer's."""
    k = min(4, len(s.eval_rows))
    groups = s.pool.generate(s.eval_prompt_ids[:k], [r.index for r in s.eval_rows[:k]], sampling_dict(s.cfg, s.cfg.rollout.n))
    return s.trainer.sync_gap(groups, s.tokenizer.pad_token_id)


def train(cfg: Config) -> dict:
    start = time.time()
    run_dir = make_run_dir(cfg)
    print(f"run dir: {run_dir}", flush=True)
    resume_from = resume_point(run_dir) if cfg.run.resume else None
    s = Session.start(cfg, weights=str(resume_from) if resume_from else None)
    try:
        return _train(s, run_dir, resume_from, start)
    finally:
        s.close()


def _train(s: Session, run_dir: Path, resume_from: Path | None, start: float) -> dict:
    cfg = s.cfg
    summary: dict = {"run_dir": str(run_dir), "model": cfg.model.path}
    base_file = run_dir / "base_accuracy.json"
    if resume_from is not None and base_file.exists():
        summary["base_accuracy"] = json.loads(base_file.read_text())["base_accuracy"]
    elif cfg.run.eval_before:
        summary["base_accuracy"] = heldout_accuracy(s.pool, s.eval_prompt_ids, s.eval_rows, cfg)
        base_file.write_text(json.dumps({"base_accuracy": summary["base_accuracy"]}))
        print(f"held-out accuracy before training: {summary['base_accuracy']:.3f} ({len(s.eval_rows)} problems)", flush=True)
    t = cfg.trainer
    sampler = EpochSampler(len(s.train_rows), cfg.data.seed)
    first = 1
    if resume_from is not None:
        done = load_train_state(resume_from, s.trainer, sampler)
        keep_metrics_through(run_dir / "metrics.jsonl", done)  # steps logged after the checkpoint are redone
        first = done + 1
        summary["resumed_from_step"] = done
        print(f"resumed from {resume_from} (step {done})", flush=True)
    log = MetricsLog(run_dir, t.steps)
    gaps, prefetched = [], None
    for step in range(first, t.steps + 1):
        t_wall = time.perf_counter()
        cursor = sampler.state_dict()
        ahead = partial(launch, s, sampler) if cfg.rollout.async_ and step < t.steps else None
        try:
            out, prefetched = rl_step(s, sampler.next, prefetched, ahead)
        except EngineLost as e:  # e.cursor: this step trained before the engines were lost
            done = step if getattr(e, "cursor", None) else step - 1
            ckpt = save_train_state(run_dir, done, s.trainer, s.tokenizer, getattr(e, "cursor", None) or cursor,
                                    cfg.run.keep_last)
            raise EngineLost(f"{e}. Checkpoint of step {done}: {ckpt}; continue with RESUME=1 once the cluster "
                             f"can hold the engines") from e
        metrics = {"step": step, **out}
        metrics["time/wall"] = time.perf_counter() - t_wall
        if step > 1 and metrics["rollout/staleness"] == 0:  # the forward ran on the weights the engines received
            gaps.append(metrics["rollout/logprob_abs_diff_max"])
        log.write(metrics)
        if cfg.run.save_every and step % cfg.run.save_every == 0:
            cursor = prefetched.cursor if prefetched is not None else sampler.state_dict()
            save_train_state(run_dir, step, s.trainer, s.tokenizer, cursor, cfg.run.keep_last)
    if t.steps > 0:
        gaps.append(final_parity(s))
    summary["sync_max_abs_logprob_diff"] = max(gaps) if gaps else None
    if cfg.run.eval_after:
        summary["final_accuracy"] = heldout_accuracy(s.pool, s.eval_prompt_ids, s.eval_rows, cfg)
        print(f"held-out accuracy after training: {summary['final_accuracy']:.3f}", flush=True)
    if cfg.run.save_checkpoint:
        summary["checkpoint"] = str(save_checkpoint(s.trainer, s.tokenizer, run_dir / "checkpoint"))
    summary.update(steps=t.steps, eval_problems=len(s.eval_rows), wall_seconds=round(time.time() - start, 1))
    write_summary(run_dir, summary)
    print(f"done: {run_dir}/summary.json", flush=True)
    return summary


def resume_point(run_dir: Path) -> Path:
    """The last complete checkpoint of the run to continue; an error if there is none."""
    found = complete_checkpoints(run_dir)
    if not found:
        raise ValueError(f"run.resume: {run_dir} has no complete checkpoint (set run.save_every to write them)")
    return found[-1]


def keep_metrics_through(path: Path, step: int) -> None:
    """Drops metrics lines of steps after `step` (logged before a crash, redone after the resume)."""
    if path.exists():
        lines = [x for x in path.read_text().splitlines() if json.loads(x)["step"] <= step]
        path.write_text("".join(x + "\n" for x in lines))


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
    except (PlacementError, EngineLost) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
