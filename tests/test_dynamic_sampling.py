"""DAPO dynamic sampling in the collect stage (`rl.collect.collector.Collector`): which groups are kept, how many
rounds, the data ledger.

The rollout pool here is a fake that answers from a table (this test is about the collection logic, not
generation); the rewards are the real verifiers.
"""

import pytest

from rl.collect.collector import Collector
from rl.config import load_config
from rl.data.prompts import PromptRow, PromptSet
from rollout.types import Completion, RolloutGroup

RIGHT, WRONG = " x </think> <answer> 5 </answer>", " x </think> <answer> 6 </answer>"
# prompt index -> its group's answers: uniform groups carry no signal
TABLE = {0: [RIGHT] * 4, 1: [RIGHT, WRONG, WRONG, WRONG], 2: [WRONG] * 4, 3: [RIGHT, RIGHT, WRONG, RIGHT],
         4: [WRONG] * 4, 5: [WRONG, RIGHT, WRONG, WRONG]}


class FakePool:
    def submit(self, prompt_ids, prompt_indices, sampling):
        return [RolloutGroup(i, [1, 2], [Completion([3], t, [-0.5], "stop") for t in TABLE[i]], engine=0, weight_version=0)
                for i in prompt_indices]

    def wait(self, pending):
        return pending

    def generate(self, prompt_ids, prompt_indices, sampling):
        return self.wait(self.submit(prompt_ids, prompt_indices, sampling))


class InOrder:
    """A data cursor that walks the given positions in order (the real one shuffles)."""

    def __init__(self, order):
        self.order, self.pos = list(order), 0

    def next(self, n):
        self.pos += n
        return self.order[self.pos - n : self.pos]

    def state_dict(self):
        return {"pos": self.pos}


def collect(overrides, order=tuple(TABLE)):
    cfg = load_config("configs/tiny.yaml", ["rollout.n=4", "trainer.prompts_per_step=2"] + overrides)
    prompts = PromptSet([PromptRow(i, "what is 2 + 3?", "5") for i in TABLE], [[1, 2]] * len(TABLE))
    c = Collector(cfg, FakePool(), prompts, InOrder(order))
    out = c.collect(step=1)  # the groups come from weight version 0, as step 1 expects
    return out, out.metrics(cfg.algo.dynamic_sampling), c


def test_keeps_groups_with_signal_and_records_the_dropped():
    out, info, _ = collect(["algo.dynamic_sampling=true"])
    assert [g.prompt_index for g in out.groups] == [1, 3]  # 0 and 2 are uniform
    assert info["data/dropped_indices"] == [0, 2] and info["sampling/rounds"] == 3
    assert out.scored.total.shape == (2, 4) and out.scored.terms["math"][0].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_round_cap_trains_on_what_it_has():
    out, info, _ = collect(["algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=1"])
    assert [g.prompt_index for g in out.groups] == [1] and info["data/dropped_indices"] == [0, 2]


def test_nothing_with_signal_trains_on_the_last_round_and_does_not_call_it_dropped():
    out, info, _ = collect(["algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=0"], order=[0, 2])
    assert [g.prompt_index for g in out.groups] == [0, 2] and info["data/dropped_indices"] == []


def test_groups_from_other_weights_are_refused():
    from rl.collect.generate import StaleWeightsError

    cfg = load_config("configs/tiny.yaml", ["rollout.n=4", "trainer.prompts_per_step=2"])
    prompts = PromptSet([PromptRow(i, "what is 2 + 3?", "5") for i in TABLE], [[1, 2]] * len(TABLE))
    with pytest.raises(StaleWeightsError, match="engine 0 sampled prompt 0 with weight version 0, but the trainer "
                                                "expects version 1 .*missed a weight sync"):
        Collector(cfg, FakePool(), prompts, InOrder(TABLE)).collect(step=2)


def test_off_takes_the_draw_as_is_and_the_ledger_commits():
    out, info, c = collect([])
    assert [g.prompt_index for g in out.groups] == [0, 1] and info["data/dropped_indices"] == []
    assert c.step_open and c.resume_cursor() == {"pos": 0}  # not trained yet: a checkpoint redoes this draw
    c.commit()
    assert not c.step_open and c.resume_cursor() == {"pos": 2}
