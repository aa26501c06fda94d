"""What a run leaves on disk: run directory, resolved config, metrics.jsonl, summary.json."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from rl.config import Config, to_yaml
from rl.errors import UserError
from rl.run.console import say
from rl.storage import RunStorage


class RunDirError(UserError):
    """The run directory holds another run."""


def make_run_dir(cfg: Config) -> RunStorage:
    """The run's location (rl/storage.py: a local folder, or a URI written through a local staging copy),
    checked writable and set up before anything starts; one that already holds a run's metrics is refused, never
    appended to. A resumed run gets its last complete checkpoint and its metrics into the staging copy."""
    storage = RunStorage(cfg.run.dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    storage.check_writable()
    if storage.exists("metrics.jsonl") and not cfg.run.resume:
        raise RunDirError(f"run.dir {storage.display()} already holds a run (metrics.jsonl); pick another RUN_DIR or "
                          f"remove it")
    if storage.remote:
        shutil.rmtree(storage.local, ignore_errors=True)  # a stale staging copy of an earlier start
    storage.local.mkdir(parents=True, exist_ok=True)
    if cfg.run.resume:
        storage.pull_for_resume()  # a resumed run keeps the config it started with
    else:
        (storage.local / "config.yaml").write_text(to_yaml(cfg))
        storage.sync()
    return storage


class MetricsLog:
    """Appends one JSON line per step (and per evaluation), writes the same scalars to TensorBoard (and wandb
    when asked), and prints one progress line per step with an ETA."""

    def __init__(self, run_dir: Path, cfg: Config):
        self.path = run_dir / "metrics.jsonl"
        self.total, self.step_s = cfg.trainer.steps, []  # the wall time of each step so far, for the ETA
        self.writers = [w for w in (_tensorboard(run_dir, cfg), _wandb(run_dir, cfg)) if w is not None]

    def write(self, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        for w in self.writers:
            w(scalars, metrics["step"])
        if "reward/mean" in metrics:
            self.step_s.append(metrics.get("time/wall", metrics["time/step"]))
            eta = sum(self.step_s) / len(self.step_s) * (self.total - metrics["step"])
            say(progress_line(metrics, self.total, eta))
        if any(k.startswith("eval/") for k in metrics):
            say(eval_line(metrics))

    def close(self) -> None:
        for w in self.writers:
            w(None, None)


def progress_line(m: dict, total: int, eta_s: float) -> str:
    masked = f"  masked {m['reward/masked']}/{m['reward/samples']}" if m.get("reward/masked") else ""
    return (f"step {m['step']:>4}/{total}  reward {m['reward/mean']:.3f}  acc {m.get('reward/accuracy', float('nan')):.3f}"
            f"  len {m['response/len_mean']:5.1f}  kl {m['loss/kl']:.4f}  clip {m['loss/clip_frac']:.3f}"
            f"  gap {m['rollout/logprob_abs_diff_max']:.1e}{masked}  {m['time/step']:.1f}s  eta {_clock(eta_s)}")


def say_eval_table(table: dict[str, dict[str, float]]) -> None:
    """The eval figures by step ({"0": {"heldout/pass@1": ...}, "40": ...}) on the console: one row per figure,
    one column per evaluated step."""
    if not table:
        return
    steps = list(table)
    say("eval figures by step: " + "  ".join(f"{'step ' + st:>10}" for st in steps))
    for fig in table[steps[-1]]:
        say(f"  {fig:<28} " + "  ".join(f"{table[st].get(fig, float('nan')):>10.3f}" for st in steps))


def eval_line(m: dict) -> str:
    figures = [f"{k.removeprefix('eval/')} {v:.3f}" for k, v in m.items() if k.startswith("eval/") and "/" not in
               k.removeprefix("eval/").split("/", 1)[-1]]
    return f"eval at step {m['step']}: " + "  ".join(figures)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _tensorboard(run_dir: Path, cfg: Config):
    """A writer of scalars into <run dir>/tensorboard, or None with log.tensorboard off."""
    if not cfg.log.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(scalars, step):
        if scalars is None:
            tb.close()
            return
        for k, v in scalars.items():
            tb.add_scalar(k, v, step)
        tb.flush()

    return write


def _wandb(run_dir: Path, cfg: Config):
    """A writer of scalars into a wandb run, or None with log.wandb off; asked for but not installed: an error."""
    if not cfg.log.wandb:
        return None
    try:
        import wandb
    except ImportError as e:
        raise UserError("log.wandb=true needs the wandb package (pip install wandb)") from e
    run = wandb.init(project=cfg.log.wandb_project, dir=str(run_dir), name=run_dir.name,
                     config=json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))

    def write(scalars, step):
        if scalars is None:
            run.finish()
        else:
            run.log(scalars, step=step)

    return write


class SampleLog:
    """samples.jsonl: every log.samples_every steps, a few prompts (as rendered), one completion each, its reward
    and its verifiers' statuses."""

    def __init__(self, run_dir: Path, cfg: Config, tokenizer):
        self.path, self.cfg, self.tokenizer = run_dir / "samples.jsonl", cfg, tokenizer

    def write(self, step: int, groups, scored) -> None:
        every = self.cfg.log.samples_every
        if not every or (step != 1 and step % every):
            return
        G = scored.total.shape[1]
        with open(self.path, "a") as f:
            for p, g in enumerate(groups[: self.cfg.log.samples]):
                c = g.completions[0]
                f.write(json.dumps({
                    "step": step, "prompt_index": g.prompt_index, "prompt": self.tokenizer.decode(g.prompt_ids),
                    "completion": c.text, "reward": float(scored.total[p, 0]), "valid": bool(scored.valid[p, 0]),
                    "statuses": {k: v[p * G] for k, v in scored.statuses.items() if v[p * G]},
                    "finish_reason": c.finish_reason, "weight_version": g.weight_version}) + "\n")


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
