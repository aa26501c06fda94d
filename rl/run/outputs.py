"""What a run leaves on disk: run directory, resolved config, metrics.jsonl, summary.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rl.config import Config, to_yaml
from rl.errors import UserError


class RunDirError(UserError):
    """The run directory holds another run."""


def make_run_dir(cfg: Config) -> Path:
    """Creates the run directory; one that already holds a run's metrics is refused, never appended to."""
    run_dir = Path(cfg.run.dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    if (run_dir / "metrics.jsonl").exists() and not cfg.run.resume:
        raise RunDirError(f"run.dir {run_dir} already holds a run (metrics.jsonl); pick another RUN_DIR or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.run.resume:  # a resumed run keeps the config it started with
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    return run_dir


class MetricsLog:
    """Appends one JSON line per step and prints one progress line."""

    def __init__(self, run_dir: Path, total_steps: int):
        self.path = run_dir / "metrics.jsonl"
        self.total = total_steps

    def write(self, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        m = metrics
        print(
            f"step {m['step']:>4}/{self.total}  reward {m['reward/mean']:.3f}  acc {m.get('reward/accuracy', float('nan')):.3f}"
            f"  len {m['response/len_mean']:5.1f}  kl {m['loss/kl']:.4f}  clip {m['loss/clip_frac']:.3f}"
            f"  gap {m['rollout/logprob_abs_diff_max']:.1e}  {m['time/step']:.1f}s",
            flush=True,
        )


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
