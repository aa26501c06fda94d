"""The collect stage: draws the step's prompts, generates their groups on the rollout pool and scores them;
with algo.dynamic_sampling it samples more until the groups carry signal, and with rollout.async it has the
next step's first round generating while this step trains (one step off-policy).

The collector is also the data ledger: it knows which drawn prompts a checkpoint may count as consumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rl.collect.dynamic import Picked, keep_signal
from rl.collect.generate import Round, check_versions, drop_void_turns, sampling, score_round
from rl.collect.scoring import ScoredGroups
from rl.config import Config
from rl.data.prompts import PromptSet
from rl.data.sampler import EpochSampler
from rollout.pool import Pending
from rollout.types import RolloutGroup, Sampling


@dataclass
class Prefetch:
    """rollout.async: the next step's first round, submitted before this step trains."""

    prompts: PromptSet
    pending: Pending
    cursor: dict  # the data cursor before these prompts were drawn: what a checkpoint taken meanwhile records
    groups: list[RolloutGroup] | None = None
    wait_s: float = 0.0


@dataclass(frozen=True)
class Collected:
    """One step's scored rollout groups (P groups of G samples) and how they were collected."""

    groups: list[RolloutGroup]
    scored: ScoredGroups
    picked: Picked
    staleness: int  # optimizer steps between sampling and training: 0, or 1 with rollout.async

    @property
    def generate_s(self) -> float:
        return sum(r.generate_s for r in self.picked.rounds)

    @property
    def reward_s(self) -> float:
        return sum(r.reward_s for r in self.picked.rounds)

    def metrics(self, dynamic: bool) -> dict:
        """The data ledger of the step: which prompts were trained on, dropped, and how stale they were."""
        out = {"rollout/staleness": self.staleness, "data/indices": [g.prompt_index for g in self.groups],
               "data/dropped_indices": self.picked.dropped}
        if dynamic:
            out["sampling/rounds"] = len(self.picked.rounds)
        return out


class Collector:
    def __init__(self, cfg: Config, pool, prompts: PromptSet, sampler: EpochSampler):
        self.cfg, self.pool, self.prompts, self.sampler = cfg, pool, prompts, sampler
        self.rounds = 0  # rounds generated for the step being collected
        self._ahead: Prefetch | None = None
        self._open_cursor: dict | None = None  # the cursor before the draws of a step not yet trained on
        self.step = 0  # the step being collected

    def collect(self, step: int) -> Collected:
        """Step `step`'s groups, each checked to come from the weights of step - 1 (step - 2 when rollout.async
        generated it during the last step); unless this is the last step, rollout.async then starts the next
        step's round."""
        cfg, self.step, self.rounds = self.cfg, step, 0
        self._open_cursor = self._ahead.cursor if self._ahead is not None else self.sampler.state_dict()
        staleness = int(self._ahead is not None)
        first = self._take_ahead() if self._ahead is not None else self._round(cfg.trainer.prompts_per_step)
        if cfg.algo.dynamic_sampling:
            picked = keep_signal(first, self._round, cfg.trainer.prompts_per_step, cfg.algo.dynamic_sampling_max_rounds)
        else:
            picked = Picked(first.groups, first.scored, [], [first])
        if cfg.rollout.async_ and step < cfg.trainer.steps:
            self._ahead = self._launch()
        return Collected(picked.groups, picked.scored, picked, staleness)

    def settle(self) -> None:
        """rollout.async: waits for the round in flight; the engines finish it before they load new weights."""
        if self._ahead is not None and self._ahead.groups is None:
            t = time.perf_counter()
            self._ahead.groups = self.pool.wait(self._ahead.pending)
            self._ahead.wait_s = time.perf_counter() - t

    def commit(self) -> None:
        """The step in progress has trained: its prompts are consumed."""
        self._open_cursor = None

    @property
    def step_open(self) -> bool:
        """True between `collect` and `commit`: a checkpoint now belongs to the step before."""
        return self._open_cursor is not None

    def resume_cursor(self) -> dict:
        """The data cursor a checkpoint taken now records: before every draw not yet trained on."""
        if self._open_cursor is not None:
            return self._open_cursor
        return self._ahead.cursor if self._ahead is not None else self.sampler.state_dict()

    def _draw(self, n: int) -> PromptSet:
        return self.prompts.take(self.sampler.next(n))

    def _round(self, n: int) -> Round:
        """n fresh prompts, generated now: by the weights the last sync pushed (version step - 1)."""
        prompts = self._draw(n)
        t = time.perf_counter()
        groups = self.pool.generate(prompts.ids, prompts.indices(), self._sampling(self.step))
        check_versions(groups, self.step - 1, 0)
        return self._filtered(score_round(groups, prompts, self.cfg.reward, time.perf_counter() - t))

    def _launch(self) -> Prefetch:
        cursor = self.sampler.state_dict()
        prompts = self._draw(self.cfg.trainer.prompts_per_step)
        return Prefetch(prompts, self.pool.submit(prompts.ids, prompts.indices(), self._sampling(self.step + 1)), cursor)

    def _sampling(self, step: int) -> Sampling:
        """The sampling of the next round of `step` (its first, when prefetched by rollout.async)."""
        round_no = self.rounds if step == self.step else 0
        self.rounds += step == self.step
        return sampling(self.cfg.rollout, self.cfg.rollout.n, step, round_no)

    def _take_ahead(self) -> Round:
        """The prefetched round (waited for by `settle` before the last sync); only that wait counts as this
        step's generation time."""
        self.settle()
        ahead, self._ahead = self._ahead, None
        check_versions(ahead.groups, self.step - 2, 1)  # generated while the last step trained
        return self._filtered(score_round(ahead.groups, ahead.prompts, self.cfg.reward, ahead.wait_s))

    def _filtered(self, r: Round) -> Round:
        tools = self.cfg.rollout.tools
        return drop_void_turns(r) if tools.name and tools.drop_void_turns else r
