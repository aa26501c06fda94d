"""A trainer rank that dies or hangs (trainer.ranks > 1) costs no step: the driver tears the group down, builds it
again in the same placement bundles from the trainer state after the last completed step, and trains the step
again on the same rollouts, so the run goes on as if nothing happened. That state is a copy the ranks write after
each step into the run's folder (`checkpoints/.trainer-state`, never uploaded: weights, optimizer, schedule, RNG; `time/trainer_state_copy`
says its cost), or the checkpoint the run resumed from. A checkpoint of an earlier step would not do: the steps
since would need their rollouts again. run.max_restarts bounds the restarts of a run; run/restarts/trainer_died
and run/restarts/trainer_hung count them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rl.config import Config
from rl.run.console import say
from rl.trainer.checkpoint import atomic_folder, checkpoint_folder, complete_checkpoints
from rl.trainer.group import TrainerGroup, TrainerLost

T = TypeVar("T")
STATE_COPY = "checkpoints/.trainer-state"


class TrainerHealer:
    def __init__(self, trainer, cfg: Config, run_dir: Path):
        self.trainer, self.cfg, self.run_dir = trainer, cfg, run_dir
        self.enabled = isinstance(trainer, TrainerGroup) and cfg.run.max_restarts > 0
        self.restarts = {"died": 0, "hung": 0}
        self.source: Path | None = None
        self.copy_s = 0.0

    def start(self, first: int) -> None:
        """Before the first step: the state to come back to is the resumed checkpoint, or a copy written now."""
        if not self.enabled:
            return
        checkpoint = checkpoint_folder(self.run_dir, first - 1)
        self.source = checkpoint if checkpoint in complete_checkpoints(self.run_dir) else self._copy()

    def _copy(self) -> Path:
        t = time.perf_counter()
        with atomic_folder(self.run_dir / STATE_COPY) as tmp:
            self.trainer.save(tmp)
        self.copy_s = time.perf_counter() - t
        return self.run_dir / STATE_COPY

    def run(self, step: int, work: Callable[[], T]) -> T:
        """`work` (the step's training and sync) and then the copy of the state it leaves, done again on a fresh
        group after each TrainerLost while run.max_restarts allows."""
        while True:
            try:
                done = work()
                if self.enabled:
                    self.source = self._copy()
                return done
            except TrainerLost as e:
                if not self.enabled or sum(self.restarts.values()) >= self.cfg.run.max_restarts:
                    raise
                self.restarts[e.kind] += 1
                say(f"{e}; rebuilding the trainer group from the state after step {step - 1} and training step "
                    f"{step} again (restart {sum(self.restarts.values())} of {self.cfg.run.max_restarts})")
                t = time.perf_counter()
                self.trainer.restart(self.source)
                say(f"the trainer group is back in {time.perf_counter() - t:.1f} s")

    def metrics(self) -> dict[str, float]:
        if not self.enabled:
            return {}
        return {"run/restarts/trainer_died": self.restarts["died"], "run/restarts/trainer_hung": self.restarts["hung"],
                "time/trainer_state_copy": self.copy_s}
