"""Datasets: schema checks with clear errors, the template, and the embedded task's disjoint splits."""

import json

import pytest

from rl.data import apply_template, load_prompts
from rl.data.prompts import DatasetError
from rl.data.sampler import EpochSampler
from rl.tasks.arithmetic.task import splits


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_embedded_splits_are_disjoint_and_shipped():
    train, heldout = splits()
    assert len(heldout) == 512 and len(train) == 10000 - 512
    assert not set(train) & set(heldout)
    rows = load_prompts("rl/tasks/arithmetic/data/heldout.jsonl")
    a, b = heldout[0]
    assert rows[0].question == f"What is {a} + {b}?" and rows[0].answer == str(a + b)
    shipped_train = {r.question for r in load_prompts("rl/tasks/arithmetic/data/train.jsonl")}
    assert not shipped_train & {r.question for r in rows}


def test_r1_zero_template_ends_inside_think():
    text = apply_template("What is 1 + 2?", "r1_zero")
    assert text.endswith("User: What is 1 + 2? Assistant: <think>")
    assert "<answer> answer here </answer>" in text


def test_question_or_prompt_column_and_numeric_answer(tmp_path):
    rows = load_prompts(write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p?", "answer": 3, "metadata": {"k": 1}}]))
    assert (rows[0].question, rows[0].answer, rows[0].metadata) == ("p?", "3", {"k": 1})


def test_missing_answer_column(tmp_path):
    with pytest.raises(DatasetError, match="row 0, key 'answer': has no 'answer'"):
        load_prompts(write_jsonl(tmp_path / "d.jsonl", [{"question": "q"}]))


def test_bad_row_names_its_index(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "1"}, {"question": "", "answer": "2"}])
    with pytest.raises(DatasetError, match="row 1"):
        load_prompts(path)


def test_empty_dataset(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DatasetError, match="empty|parse"):
        load_prompts(str(tmp_path / "e.jsonl"))


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match="unsupported"):
        load_prompts(str(tmp_path / "x.csv"))


def test_sampler_covers_each_epoch_once_and_resumes():
    s = EpochSampler(10, seed=3)
    first = s.next(6) + s.next(4)
    assert sorted(first) == list(range(10))
    state = s.state_dict()
    nxt = s.next(7)
    s2 = EpochSampler(10, seed=3)
    s2.load_state_dict(state)
    assert s2.next(7) == nxt


def test_procedural_split_from_reasoning_gym_and_its_verifier():
    from rewards import get_verifier

    rows = load_prompts("reasoning_gym:countdown?size=3&seed=5&min_numbers=2&max_numbers=2")
    again = load_prompts("reasoning_gym:countdown?size=3&seed=5&min_numbers=2&max_numbers=2")
    other = load_prompts("reasoning_gym:countdown?size=3&seed=6&min_numbers=2&max_numbers=2")
    assert [r.question for r in rows] == [r.question for r in again] != [r.question for r in other]
    row = rows[0]
    assert row.data_source == "countdown" and row.metadata["task"] == "countdown"
    verify = get_verifier("reasoning_gym")
    assert verify(f"x </think> <answer> {row.answer} </answer>", row.answer, **row.metadata).status == "ok"
    assert verify("x </think> <answer> 1 </answer>", row.answer, **row.metadata).score < 1
    assert verify("no tags", row.answer, **row.metadata).status == "no_answer"
    with pytest.raises(DatasetError, match="size=N&seed=S"):
        load_prompts("reasoning_gym:countdown?size=3")
    with pytest.raises(DatasetError, match="cannot build it"):
        load_prompts("reasoning_gym:no_such_task?size=3&seed=1")


def test_procedural_eval_cannot_share_the_training_seed():
    from rl.config import load_config
    from rl.errors import ConfigError
    from rl.run.session import load_data
    from rl.trainer.policy import load_tokenizer

    cfg = load_config("configs/tiny-countdown.yaml", ["eval.sets={}",
                      "data.eval=reasoning_gym:countdown?size=4&seed=1&min_numbers=2&max_numbers=2",
                      "data.train=reasoning_gym:countdown?size=4&seed=1&min_numbers=2&max_numbers=2"])
    with pytest.raises(ConfigError, match="data.eval .* uses a training split's seed"):
        load_data(cfg, load_tokenizer("models/tiny-moe-base"), trainable=True)
    # the next seed shares all but one item: reasoning-gym makes item i of seed S from seed S + i
    a = load_prompts("reasoning_gym:countdown?size=4&seed=1&min_numbers=2&max_numbers=2")
    b = load_prompts("reasoning_gym:countdown?size=4&seed=2&min_numbers=2&max_numbers=2")
    assert [r.prompt for r in a[1:]] == [r.prompt for r in b[:3]]
    shifted = load_config("configs/tiny-countdown.yaml", ["eval.sets={}",
                          "data.eval=reasoning_gym:countdown?size=4&seed=3&min_numbers=2&max_numbers=2",
                          "data.train=reasoning_gym:countdown?size=4&seed=1&min_numbers=2&max_numbers=2"])
    with pytest.raises(ConfigError, match=r"draws reasoning-gym's items 3..6 and .* draws 1..4 .* use a seed of 5"):
        load_data(shifted, load_tokenizer("models/tiny-moe-base"), trainable=True)
    mixed = load_config("configs/tiny-countdown.yaml", ["eval.sets={}",  # the seed of a data.mix source counts too
                        "data.eval=reasoning_gym:countdown?size=4&seed=7&min_numbers=2&max_numbers=2",
                        "data.mix=[{path: 'reasoning_gym:countdown?size=4&seed=7&min_numbers=2&max_numbers=2'}]"])
    with pytest.raises(ConfigError, match="data.eval .* uses a training split's seed"):
        load_data(mixed, load_tokenizer("models/tiny-moe-base"), trainable=True)
