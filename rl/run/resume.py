"""Continuing a run after a crash: where it stopped, and the metrics lines to redo."""

from __future__ import annotations

import json
from pathlib import Path

from rl.errors import UserError
from rl.trainer.checkpoint import complete_checkpoints


def resume_point(run_dir: Path) -> Path:
    """The last complete checkpoint of the run to continue, checked before anything starts (its state reads, its
    weights or adapter are whole); an error naming the file if not, or if there is none."""
    from rl.trainer.checkpoint import checkpoint_step
    from rl.trainer.policy import check_model_folder

    found = complete_checkpoints(run_dir)
    if not found:
        raise UserError(f"run.resume: {run_dir} has no complete checkpoint (set run.save_every to write them)")
    last = found[-1]
    checkpoint_step(last)
    if (last / "config.json").is_file():
        check_model_folder(last)
    return last


def keep_metrics_through(path: Path, step: int) -> None:
    """Drops metrics lines of steps after `step` (logged before a crash, redone after the resume)."""
    if path.exists():
        lines = [x for x in path.read_text().splitlines() if json.loads(x)["step"] <= step]
        path.write_text("".join(x + "\n" for x in lines))
