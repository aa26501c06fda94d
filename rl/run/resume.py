"""Continuing a run after a crash: where it stopped, and the metrics lines to redo."""

from __future__ import annotations

import json
from pathlib import Path

from rl.errors import UserError
from rl.run.console import say
from rl.trainer.checkpoint import complete_checkpoints
from rl.trainer.manifest import manifest_problem


def resume_point(run_dir: Path) -> Path:
    """The newest intact checkpoint of the run to continue, checked before anything starts (checkpoint_problem). A
    damaged one is renamed `<name>.damaged`, with a warning naming the file that failed, and the one before it is
    tried; an error if none is left, or if there is none."""
    found = complete_checkpoints(run_dir)
    if not found:
        raise UserError(f"run.resume: {run_dir} has no complete checkpoint (set run.save_every to write them)")
    problems = []
    for ckpt in reversed(found):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        problems.append(problem)
        ckpt.rename(ckpt.with_name(ckpt.name + ".damaged"))
        say(f"warning: checkpoint {ckpt.name} is damaged: {problem}; set aside as {ckpt.name}.damaged, trying the "
            f"one before it")
    raise UserError(f"run.resume: every checkpoint of {run_dir} is damaged: " + "; ".join(problems))


def checkpoint_problem(ckpt: Path) -> str | None:
    """What is wrong with a complete checkpoint, naming the file: a file that fails its manifest (size, SHA-256), a
    state that does not read, weights or an adapter that are not whole; None when it is intact."""
    from rl.trainer.checkpoint import checkpoint_step
    from rl.trainer.policy import check_model_folder

    if problem := manifest_problem(ckpt):
        return problem
    try:
        checkpoint_step(ckpt)
        if (ckpt / "config.json").is_file():
            check_model_folder(ckpt)
    except UserError as e:
        return str(e)
    return None


def keep_metrics_through(path: Path, step: int) -> None:
    """Drops metrics lines of steps after `step` (logged before a crash, redone after the resume)."""
    if path.exists():
        lines = [x for x in path.read_text().splitlines() if json.loads(x)["step"] <= step]
        path.write_text("".join(x + "\n" for x in lines))
