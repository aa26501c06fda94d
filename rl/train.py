"""The R1-Zero loop: prompts -> rollout groups -> rewards -> advantages -> policy update -> weight sync.

`python -m rl.train --config configs/tiny.yaml rollout.n=8 trainer.lr=1e-5`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rl.batch.build import build_tokens
from rl.batch.prepare import prepare_batch, trainer_forwards
from rl.batch.types import TokenBatch, TrainBatch
from rl.collect import failures
from rl.collect.collector import Collected, Collector
from rl.collect.failures import RewardFailure, watch
from rl.collect.generate import reflection_rate, sampling, tool_metrics
from rl.collect.scoring import reward_metrics
from rl.config import Config, ConfigError, load_config
from rl.data.sampler import EpochSampler
from rl.errors import UserError
from rl.eval.run import run_evals
from rl.evaluate import heldout_accuracy
from rl.objectives.mismatch import mismatch_metrics
from rl.run.console import say, third_party_to
from rl.run.dry_run import dry_run
from rl.run.heal import TrainerHealer
from rl.run.outputs import MetricsLog, SampleLog, make_run_dir, say_eval_table, write_summary
from rl.run.placement import PlacementError
from rl.run.plot import plot_run
from rl.run.resume import keep_metrics_through, resume_point
from rl.run.session import Session, engine_dtype
from rl.run.supervise import supervise
from rl.storage import RunStorage
from rl.sync.parity import BF16_MEAN_GAP, FP32_MEAN_GAP, in_parity
from rl.sync.weights import sync_weights, trainer_turn
from rl.trainer.checkpoint import (
    checkpoint_folder,
    checkpoint_step,
    complete_checkpoints,
    load_train_state,
    save_policy,
    save_train_state,
)
from rl.trainer.update import UpdateResult
from rollout.pool import EngineLost


def rl_step(s: Session, collector: Collector, step: int, samples: SampleLog | None = None,
            healer: TrainerHealer | None = None) -> dict:
    """Step `step`, top to bottom: collect the groups, prepare the batch, update the policy, sync the engines
    (their weights become version `step`). `healer`: a trainer rank lost in the update or the sync costs a
    rebuilt group and the same work again (rl.run.heal)."""
    cfg = s.cfg
    collected = collector.collect(step)
    if samples is not None:
        samples.write(step, collected.groups, collected.scored)
    tokens = build_tokens(collected.groups, s.tokenizer.pad_token_id)
    work = partial(train_and_sync, s, collector, collected, tokens, step)
    forwards, batch, shaping, result, train_s, sync = healer.run(step, work) if healer is not None else work()
    # time/train covers the reference, old-logprob recompute, forward/backward and optimizer
    times = {"time/generate": collected.generate_s, "time/reward": collected.reward_s, "time/train": train_s,
             "time/sync": sync["time/sync"]}
    return {
        **reward_metrics(collected.scored, cfg.reward.accuracy_verifier),
        **shaping,
        **({"time/reference": forwards.reference_s} if cfg.algo.kl_coef > 0 else {}),
        **response_metrics(tokens, collected.generate_s),
        **(tool_metrics(collected.groups, cfg.rollout.tools.drop_void_turns) if cfg.rollout.tools.name else {}),
        **({"response/reflection_rate": reflection_rate(collected.groups, cfg.log.reflection_markers)}
           if cfg.log.reflection_markers else {}),
        **result.metrics,
        **pre_update_gap(batch, result, cfg),
        "train/tokens": int(batch.attention_mask.sum()),
        "rollout/engine_restarts": s.pool.restarts,
        "rollout/engine_hangs": s.pool.hangs,
        **(healer.metrics() if healer is not None else {}),
        **times,
        "time/step": sum(times.values()),
        **collected.metrics(cfg.algo.dynamic_sampling),
        **sync,
    }


def train_and_sync(s: Session, collector: Collector, collected: Collected, tokens: TokenBatch, step: int) -> tuple:
    """The trainer's part of a step: its forwards, the batch, the update, then the sync of the engines."""
    cfg, t = s.cfg, time.perf_counter()
    with trainer_turn(s.pool, cfg.cluster.colocate):  # colocated engines sleep while the trainer works
        forwards = trainer_forwards(s.trainer, tokens, cfg)
        batch, shaping = prepare_batch(collected.scored, tokens, forwards, cfg)
        result = s.trainer.update(batch)
    train_s = time.perf_counter() - t
    collector.commit()
    collector.settle()  # rollout.async: the engines finish the next round before they load new weights
    sync = sync_weights(s.sender, s.pool, s.trainer, step, cfg.cluster.colocate)
    return forwards, batch, shaping, result, train_s, sync


def pre_update_gap(batch: TrainBatch, result: UpdateResult, cfg: Config) -> dict[str, float]:
    """The rollout/trainer mismatch on the sampled tokens, from forwards made before any optimizer step."""
    if cfg.algo.old_logprobs == "trainer":  # the recomputed logprobs cover every row, before any step
        return mismatch_metrics(batch.old_logps, batch.sampler_logps, batch.mask)
    return mismatch_metrics(result.before_logps, batch.sampler_logps, batch.mask & result.before_rows[:, None])


def response_metrics(tokens: TokenBatch, generate_s: float) -> dict:
    lens = tokens.response_lengths.float()
    n_tokens = int(lens.sum())
    return {"response/len_mean": float(lens.mean()), "response/len_max": int(lens.max()),
            "response/truncated_frac": float(tokens.truncated.float().mean()), "rollout/tokens": n_tokens,
            "rollout/tokens_per_s": n_tokens / max(generate_s, 1e-9)}


def final_parity(s: Session) -> dict:
    """After the last sync: sample a few groups and compare the engine's logprobs with the trainer's; the check
    reads the mean gap, with the threshold of the engines' precision (rl.sync.parity.in_parity)."""
    prompts = s.eval.head(4)
    groups = s.pool.generate(prompts.ids, prompts.indices(), sampling(s.cfg.rollout, s.cfg.rollout.n))
    gaps = s.trainer.sync_gap(groups, s.tokenizer.pad_token_id)
    bf16 = engine_dtype(s.cfg) != "float32"
    ok = in_parity(gaps, bf16)
    if not ok:
        say(f"the sync check after the last step failed: the engines' logprobs differ from the trainer's by "
            f"{gaps['mean']:.2e} on average, {gaps['max']:.2e} at most (limit: "
            f"mean < {BF16_MEAN_GAP if bf16 else FP32_MEAN_GAP:g})")
    return {**gaps, "precision": "bf16" if bf16 else "fp32", "in_parity": ok}


def train(cfg: Config) -> dict:
    """The whole run: the run directory, the session, evaluations, the steps, the final policy, the curves.
    Third-party output goes to <run dir>/logs/ (log.verbose keeps it on the console)."""
    start = time.time()
    storage = make_run_dir(cfg)
    run_dir = storage.local
    say(f"run dir: {storage.display()}" + (f" (staged in {run_dir})" if storage.remote else ""))
    say(config_summary(cfg))
    try:
        with third_party_to(None if cfg.log.verbose else run_dir / "logs"):
            summary = run(cfg, storage, start)
    finally:
        storage.sync(skip=("checkpoints/", "checkpoint/"))  # the logs too, whatever happened
    say(f"done: {storage.where('summary.json')}")
    return summary


def run(cfg: Config, storage: RunStorage, start: float) -> dict:
    run_dir = storage.local
    resume_from = resume_point(run_dir) if cfg.run.resume else None
    # with LoRA a checkpoint holds the adapter, and a remote one is on the driver's node only: the engines start
    # from the base and are synced before the first step
    from_base = resume_from is not None and (cfg.model.lora.rank > 0 or storage.remote)
    s = Session.start(cfg, weights=resume_weights(storage, resume_from, cfg), engines_from_base=from_base,
                      version=checkpoint_step(resume_from) if resume_from else 0)
    if from_base:
        sync_weights(s.sender, s.pool, s.trainer, checkpoint_step(resume_from))
    log = MetricsLog(run_dir, cfg)
    watch(run_dir / "logs" / "rewards.log", cfg.reward.max_error_rate, cfg.reward.max_error_steps)
    try:
        summary = {"run_dir": storage.display(), "model": cfg.model.path, **base_accuracy(s, run_dir, resume_from)}
        if resume_from is None and cfg.run.eval_before and cfg.eval.sets:
            log.write({"step": 0, **run_evals(s.pool, s.eval_sets, cfg, 0, run_dir)})
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), cfg.data.seed))
        first = 1 if resume_from is None else resume(s, collector, storage, resume_from, summary)
        gaps = loop(s, collector, Outputs(run_dir, log, SampleLog(run_dir, cfg, s.tokenizer), storage), first)
        finish(s, storage, gaps, summary)
        summary.update(steps=cfg.trainer.steps, eval_problems=len(s.eval), wall_seconds=round(time.time() - start, 1))
        write_summary(run_dir, summary)
    finally:
        log.close()
        s.close()
    if cfg.log.plot:
        plot_run(run_dir)
    storage.sync()
    return summary


def config_summary(cfg: Config) -> str:
    """Two lines of what the run does."""
    d, r, a, t = cfg.data, cfg.rollout, cfg.algo, cfg.trainer
    sets = ", ".join(f"{name} ({e.size})" for name, e in cfg.eval.sets.items()) or "none"
    mixed = "".join(f" + {m.path} ({m.format})" for m in d.mix)
    return (f"config: {cfg.model.path} ({cfg.model.dtype}); {d.train} ({d.format}){mixed}, template {d.template}; "
            f"{t.steps} steps x {t.prompts_per_step} prompts x {r.n} samples, up to {r.max_new_tokens} tokens\n"
            f"        {a.advantage.name} + {a.loss.name} (kl_coef {a.kl_coef}), lr {t.lr}; {r.num_engines} engine(s), "
            f"{t.ranks} trainer rank(s); eval sets {sets}, n={cfg.eval.n}, k={cfg.eval.k}")


def base_accuracy(s: Session, run_dir: Path, resume_from: Path | None) -> dict:
    """The held-out accuracy before training (kept from the run's first start when it resumes)."""
    saved = run_dir / "base_accuracy.json"
    if resume_from is not None and saved.exists():
        return json.loads(saved.read_text())
    if not s.cfg.run.eval_before:
        return {}
    acc = heldout_accuracy(s.pool, s.eval, s.cfg)
    saved.write_text(json.dumps({"base_accuracy": acc}))
    say(f"held-out accuracy before training: {acc:.3f} ({len(s.eval)} problems)")
    return {"base_accuracy": acc}


def resume_weights(storage: RunStorage, resume_from: Path | None, cfg: Config) -> str | None:
    """What the trainer resumes from: the checkpoint's folder, or for a remote run with trainer ranks (on any node)
    its URI, which each rank downloads on its own node."""
    if resume_from is None:
        return None
    uri = storage.uri(resume_from.relative_to(storage.local).as_posix())
    return uri if uri and cfg.trainer.ranks > 1 else str(resume_from)


def resume(s: Session, collector: Collector, storage: RunStorage, resume_from: Path, summary: dict) -> int:
    """Restores the trainer and the data cursor; returns the first step to run."""
    run_dir = storage.local
    done = load_train_state(resume_from, s.trainer, collector.sampler, resume_weights(storage, resume_from, s.cfg))
    keep_metrics_through(run_dir / "metrics.jsonl", done)  # steps logged after the checkpoint are redone
    summary["resumed_from_step"] = done
    say(f"resumed from {resume_from} (step {done})")
    return done + 1


@dataclass(frozen=True)
class Outputs:
    run_dir: Path
    metrics: MetricsLog
    samples: SampleLog
    storage: RunStorage

    def checkpoint(self, s: Session, collector: Collector, step: int) -> str:
        """A resumable checkpoint of `step`, written locally, then uploaded where the run lives; its location."""
        rel = checkpoint_folder(self.run_dir, step).relative_to(self.run_dir).as_posix()
        self.storage.clear(rel)  # a checkpoint of this step written before (an interrupted run's) is incomplete now
        save_train_state(self.run_dir, step, s.trainer, s.tokenizer, collector.resume_cursor(), s.cfg.run.keep_last,
                         upload=self.storage.uri(rel))
        self.storage.push_folder(rel)
        self.storage.prune([c.relative_to(self.run_dir).as_posix() for c in complete_checkpoints(self.run_dir)])
        return self.storage.where(rel)


def loop(s: Session, collector: Collector, out: Outputs, first: int) -> list[float]:
    """Steps first..trainer.steps, with their metrics, evaluations and checkpoints; returns each step's sync
    parity."""
    cfg, gaps, healer = s.cfg, [], TrainerHealer(s.trainer, s.cfg)
    healer.start()
    for step in range(first, cfg.trainer.steps + 1):
        t_wall = time.perf_counter()
        try:
            metrics = {"step": step, **rl_step(s, collector, step, out.samples, healer)}
        except EngineLost as e:
            raise checkpoint_lost_run(s, collector, out, step, e) from e
        metrics["time/wall"] = time.perf_counter() - t_wall
        stop_on_failing_rewards(s, collector, out, metrics)
        if step > 1 and metrics["rollout/staleness"] == 0:  # the forward ran on the weights the engines received
            gaps.append(metrics["rollout/logprob_abs_diff_max"])
        if evaluates_at(cfg, step):
            metrics |= run_evals(s.pool, s.eval_sets, cfg, step, out.run_dir)
        out.metrics.write(metrics)
        out.storage.sync()  # the step's metrics are uploaded before its checkpoint is complete: a resume finds them
        if cfg.run.save_every and step % cfg.run.save_every == 0:
            out.checkpoint(s, collector, step)
    return gaps


def stop_on_failing_rewards(s: Session, collector: Collector, out: Outputs, metrics: dict) -> None:
    """After a step: when its verifiers have failed on too many samples for too long (reward.max_error_rate,
    reward.max_error_steps), its metrics and a checkpoint are written and the run stops naming the failure. Answers
    the void-turn filter dropped are no verifier's failure."""
    try:
        failures.WATCH.end_step(metrics["reward/masked"] - metrics.get("tools/void_dropped", 0), metrics["reward/samples"])
    except RewardFailure as e:
        out.metrics.write(metrics)
        step = metrics["step"]
        raise RewardFailure(f"{e}. Checkpoint of step {step}: {out.checkpoint(s, collector, step)}") from None


def evaluates_at(cfg: Config, step: int) -> bool:
    """Every eval.every steps, and after the last one (run.eval_after)."""
    if not cfg.eval.sets:
        return False
    return bool(cfg.eval.every and step % cfg.eval.every == 0) or (step == cfg.trainer.steps and cfg.run.eval_after)


def checkpoint_lost_run(s: Session, collector: Collector, out: Outputs, step: int, e: EngineLost) -> EngineLost:
    """Every engine is gone: a checkpoint of the last step that trained, and the error that says how to go on."""
    done = step - 1 if collector.step_open else step
    ckpt = out.checkpoint(s, collector, done)
    return EngineLost(f"{e}. Checkpoint of step {done}: {ckpt}; continue with RESUME=1 once the cluster can hold "
                      f"the engines")


def finish(s: Session, storage: RunStorage, gaps: list[float], summary: dict) -> None:
    """The last parity check, the held-out accuracy after training and the final policy."""
    cfg = s.cfg
    if cfg.trainer.steps > 0:
        summary["sync_final"] = final_parity(s)
        gaps.append(summary["sync_final"]["max"])
    summary["sync_max_abs_logprob_diff"] = max(gaps) if gaps else None
    if cfg.run.eval_after:
        summary["final_accuracy"] = heldout_accuracy(s.pool, s.eval, cfg)
        say(f"held-out accuracy after training: {summary['final_accuracy']:.3f}")
    summary["eval"] = eval_table(s.cfg, str(storage.local))
    if cfg.run.save_checkpoint:
        storage.clear("checkpoint")
        save_policy(s.trainer, s.tokenizer, storage.local / "checkpoint", upload=storage.uri("checkpoint"))
        storage.push_folder("checkpoint")
        summary["checkpoint"] = storage.where("checkpoint")


def eval_table(cfg: Config, run_dir: str | None) -> dict:
    """The eval figures of the run by step, from metrics.jsonl ({"0": {"heldout/pass@1": ...}, "40": ...}), also
    printed as a table: one row per figure, one column per evaluated step."""
    lines = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()] if run_dir else []
    table = {str(m["step"]): {k.removeprefix("eval/"): v for k, v in m.items() if k.startswith("eval/")}
             for m in lines if any(k.startswith("eval/") for k in m)}
    say_eval_table(table)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--dry-run", action="store_true", help="check and place the run and print each GPU's memory, "
                   "with no GPU and no weights (rl/run/plan.py)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.n=16 trainer.lr=1e-5")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if cfg.run.supervise and not args.dry_run:
        return supervise(args.config, args.overrides, cfg)
    try:
        dry_run(cfg) if args.dry_run else train(cfg)
    except UserError as e:  # a bad dataset, model path, run dir or name: the message says what; a bug keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (PlacementError, EngineLost) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
