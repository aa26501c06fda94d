"""DAPO dynamic sampling in `rl.train.collect`: which groups are kept, how many rounds, the data ledger.

The rollout pool here is a fake that answers from a table (this test is about the collection logic, not
generation); the rewards are the real verifiers.
"""

from types import SimpleNamespace

from rl.config import load_config
from rl.data.prompts import PromptRow
from rl.train import collect
from rollout.types import Completion, RolloutGroup

RIGHT, WRONG = " x </think> <answer> 5 </answer>", " x </think> <answer> 6 </answer>"
# prompt index -> its group's answers: uniform groups carry no signal
TABLE = {0: [RIGHT] * 4, 1: [RIGHT, WRONG, WRONG, WRONG], 2: [WRONG] * 4, 3: [RIGHT, RIGHT, WRONG, RIGHT],
         4: [WRONG] * 4, 5: [WRONG, RIGHT, WRONG, WRONG]}


class FakePool:
    def submit(self, prompt_ids, prompt_indices, sampling):
        return [RolloutGroup(i, [1, 2], [Completion([3], t, [-0.5], "stop") for t in TABLE[i]]) for i in prompt_indices]

    def wait(self, pending):
        return pending


def session(overrides):
    cfg = load_config("configs/tiny.yaml", ["rollout.n=4", "trainer.prompts_per_step=2"] + overrides)
    rows = [PromptRow(i, "what is 2 + 3?", "5") for i in TABLE]
    return SimpleNamespace(cfg=cfg, pool=FakePool(), train_prompt_ids=[[1, 2]] * len(rows), train_rows=rows)


def drawer():
    order = iter(range(len(TABLE)))
    return lambda n: [next(order) for _ in range(n)]


def test_keeps_groups_with_signal_and_records_the_dropped():
    groups, scored, info = collect(session(["algo.dynamic_sampling=true"]), drawer())
    assert [g.prompt_index for g in groups] == [1, 3]  # 0 and 2 are uniform
    assert info["data/dropped_indices"] == [0, 2] and info["sampling/rounds"] == 3
    assert scored.total.shape == (2, 4) and scored.terms["math"][0].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_round_cap_trains_on_what_it_has():
    groups, _, info = collect(session(["algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=1"]), drawer())
    assert [g.prompt_index for g in groups] == [1] and info["data/dropped_indices"] == [0, 2]


def test_nothing_with_signal_trains_on_the_last_round_and_does_not_call_it_dropped():
    s = session(["algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=0"])
    groups, _, info = collect(s, lambda n: [0, 2][:n])
    assert [g.prompt_index for g in groups] == [0, 2] and info["data/dropped_indices"] == []


def test_off_takes_the_draw_as_is():
    groups, _, info = collect(session([]), drawer())
    assert [g.prompt_index for g in groups] == [0, 1] and info["data/dropped_indices"] == []
