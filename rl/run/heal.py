"""A trainer rank that dies or hangs (trainer.ranks > 1) costs no step: the driver tears the group down, builds it
again in the same placement bundles from the trainer state after the last completed step, and trains the step
again on the same rollouts, so the run goes on as if nothing happened. That state (weights, optimizer, schedule,
every rank's RNG) is a copy the ranks hand the driver after each step, kept in the driver's memory: on the driver's
node, whatever node a rank was on, with or without shared storage, written nowhere (`time/trainer_state_copy` says
its cost). A checkpoint of an earlier step would not do: the steps since would need their rollouts again.
run.max_restarts bounds the restarts of a run; run/restarts/trainer_died and run/restarts/trainer_hung count them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from rl.config import Config
from rl.run.console import say
from rl.trainer.group import StateCopy, TrainerGroup, TrainerLost

T = TypeVar("T")


class TrainerHealer:
    def __init__(self, trainer, cfg: Config):
        self.trainer, self.cfg = trainer, cfg
        self.enabled = isinstance(trainer, TrainerGroup) and cfg.run.max_restarts > 0
        self.restarts = {"died": 0, "hung": 0}
        self.source: StateCopy | None = None
        self.copy_s = 0.0
        self.copy_bytes = 0

    def start(self) -> None:
        """Before the first step: the state to come back to, as the run starts or resumes."""
        if self.enabled:
            self.source = self._copy()

    def _copy(self) -> StateCopy:
        t = time.perf_counter()
        state = self.trainer.snapshot()
        self.copy_s, self.copy_bytes = time.perf_counter() - t, sum(len(v) for v in state.values())
        return state

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
                "time/trainer_state_copy": self.copy_s, "run/trainer_state_copy_gib": self.copy_bytes / 2**30}
