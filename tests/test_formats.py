"""Dataset formats (verl parquet, GSM8K, MATH, TRL conversational, purerl's own), templates, and per-row rewards:
each fixture in tests/data/formats/ is in its dataset's exact format."""

import json

import pytest
import torch

from rl.collect.scoring import reward_metrics, score_groups
from rl.config import load_config
from rl.data import encode, load_prompts
from rl.data.prompts import DatasetError
from rl.data.templates import TemplateError, render
from rl.trainer.policy import load_tokenizer
from rollout.types import Completion, RolloutGroup

FIXTURES = "tests/data/formats"
ANSWERS = ["80", "153", "35", "100", "140", "91", "51", "86"]  # a + b of each fixture's rows
SOURCES = {"verl": ("verl.parquet", "arithmetic"), "gsm8k": ("gsm8k.jsonl", "gsm8k"), "math": ("math.jsonl", "math"),
           "conversational": ("conversational.jsonl", "default")}


def right(answer: str) -> str:
    return f" {answer} </think> <answer> {answer} </answer>"


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_each_format_reads_the_reference_and_source(fmt):
    name, source = SOURCES[fmt]
    rows = load_prompts(f"{FIXTURES}/{name}", format=fmt)
    assert [r.answer for r in rows] == ANSWERS
    assert rows[0].question == "What is 51 + 29?" and {r.data_source for r in rows} == {source}
    if fmt in ("verl", "conversational"):
        assert rows[0].prompt == [{"role": "user", "content": "What is 51 + 29?"}]
    if fmt == "verl":
        assert rows[3].info == {"style": "rule", "split": "train", "index": 3}
    if fmt == "gsm8k":
        assert rows[0].info["solution"].endswith("#### 80")


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_rewards_use_the_formats_reference(fmt):
    name, _ = SOURCES[fmt]
    rows = load_prompts(f"{FIXTURES}/{name}", format=fmt)[:2]
    groups = [RolloutGroup(r.index, [1], [Completion([2], right(ANSWERS[i]), [0.0], "stop"),
                                          Completion([2], right("7"), [0.0], "stop")]) for i, r in enumerate(rows)]
    scored = score_groups(groups, {r.index: r for r in rows}, load_config("configs/tiny.yaml").reward)
    assert scored.terms["math"].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt,row,key", [
    ("gsm8k", {"question": "q?", "answer": "forty-two"}, "answer"),  # no '#### 42' line
    ("gsm8k", {"answer": "x\n#### 1"}, "question"),
    ("math", {"problem": "p?", "solution": "no box here"}, "solution"),
    ("math", {"problem": "p?"}, "solution"),
    ("conversational", {"prompt": [{"role": "user"}], "solution": "1"}, "prompt"),
    ("conversational", {"prompt": [{"role": "system", "content": "s"}], "answer": "1"}, "prompt"),
    ("verl", {"prompt": [{"role": "user", "content": "q"}], "data_source": "x", "reward_model": {"style": "rule"}},
     "reward_model.ground_truth"),
    ("verl", {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": "1"}}, "data_source"),
    ("purerl", {"prompt": 7, "answer": "1"}, "prompt"),
])
def test_a_malformed_row_names_file_row_and_key(tmp_path, fmt, row, key):
    path = write(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": "1", "problem": "ok?", "solution": "\\boxed{1}",
                                           "prompt": [{"role": "user", "content": "ok?"}], "data_source": "x",
                                           "reward_model": {"ground_truth": "1"}} if fmt != "gsm8k" else
                                          {"question": "ok?", "answer": "#### 1"}, row])
    with pytest.raises(DatasetError, match=rf"bad\.jsonl: row 1, key '{key}'"):
        load_prompts(path, format=fmt)


def test_key_overrides_read_renamed_columns(tmp_path):
    path = write(tmp_path / "r.jsonl", [{"query": "What is 1 + 2?", "target": 3, "src": "toy"}])
    rows = load_prompts(path, keys={"prompt": "query", "answer": "target", "data_source": "src"})
    assert (rows[0].question, rows[0].answer, rows[0].data_source) == ("What is 1 + 2?", "3", "toy")


def test_templates_render_text_and_messages():
    tok = load_tokenizer("models/tiny-moe-base")
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 1 + 2?"}]
    assert render(chat, "r1_zero", tok).endswith("User: What is 1 + 2? Assistant: <think>")
    assert render("What is 1 + 2?", "Q: {question}\nA:", tok) == "Q: What is 1 + 2?\nA:"
    with pytest.raises(TemplateError, match="has no chat template"):
        render(chat, "chat", tok)
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert render("hi", "chat", tok, "sys") == "<system>sys<user>hi<assistant>"
    assert render(chat, "chat", tok, "ignored: the row has its own") == "<system>be brief<user>What is 1 + 2?<assistant>"
    ids = encode(load_prompts(f"{FIXTURES}/verl.parquet", format="verl")[:1], tok, "r1_zero").ids[0]
    assert tok.decode(ids).endswith("User: What is 51 + 29? Assistant: <think>")


def test_bad_template_and_format_are_config_errors():
    from rl.errors import ConfigError

    with pytest.raises(ConfigError, match="data.template 'answer me' is neither a template"):
        load_config("configs/tiny.yaml", ["data.template=answer me"])
    with pytest.raises(ConfigError, match="data.format 'csv' is not one of"):
        load_config("configs/tiny.yaml", ["data.format=csv"])


def test_each_row_is_scored_by_its_sources_terms():
    """A math row never reaches the code verifier: only rows of source `code` do (their reference here is not a
    code spec, so reaching it would be an `error`)."""
    from rl.data.prompts import PromptRow

    cfg = load_config("configs/tiny.yaml", ["reward.sources={code: {terms: [{verifier: code}], accuracy_verifier: code}}"])
    rows = {0: PromptRow(0, "What is 1 + 2?", "3", data_source="math"),
            1: PromptRow(1, "Write f", json.dumps({"kind": "call", "fn_name": "f", "cases": [{"args": [1], "output": 2}]}),
                         data_source="code")}
    groups = [RolloutGroup(0, [1], [Completion([2], right("3"), [0.0], "stop")] * 2),
              RolloutGroup(1, [1], [Completion([2], "```python\ndef f(x):\n    return x + 1\n```", [0.0], "stop"),
                                    Completion([2], "```python\ndef f(x):\n    return x\n```", [0.0], "stop")])]
    scored = score_groups(groups, rows, cfg.reward)
    assert scored.statuses["code"][:2] == ["", ""] and scored.statuses["math"][2:] == ["", ""]
    assert scored.terms["code"][1].tolist() == [1.0, 0.0] and scored.terms["math"][0].tolist() == [1.0, 1.0]
    assert torch.allclose(scored.total, torch.tensor([[1.1, 1.1], [1.0, 0.0]]))
    m = reward_metrics(scored, cfg.reward.accuracy_verifier)
    assert m["reward/math/accuracy"] == 1.0 and m["reward/code/accuracy"] == 0.5 and m["reward/accuracy"] == 0.75
    assert m["reward/code/mean"] == 0.5 and m["reward/format/mean"] == 1.0  # each over the samples it scored


@pytest.mark.engines  # every format is read in make test (above); one trains there, all four in make test-slow
@pytest.mark.parametrize("fmt", [f if f == "math" else pytest.param(f, marks=pytest.mark.slow)
                                 for f in SOURCES])
def test_each_format_trains_two_steps(fmt, tmp_path):
    from rl.train import train

    path = f"{FIXTURES}/{SOURCES[fmt][0]}"
    cfg = load_config("configs/tiny.yaml", [
        f"data.train={path}", f"data.eval={path}", f"data.format={fmt}", "data.eval_size=8", "trainer.steps=2",
        "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=48", "run.eval_after=false",
        "run.save_checkpoint=false", f"eval.sets={{fixture: {{path: {path}, format: {fmt}, size: 4}}}}", "eval.n=2",
        "eval.k=[1,2]", "log.plot=false", f"run.dir={tmp_path}"])
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2] and all(m["reward/math/error"] == 0 for m in lines[1:])
    assert 0 <= summary["base_accuracy"] <= 1 and lines[0]["eval/fixture/pass@2"] >= lines[0]["eval/fixture/pass@1"]
    assert summary["sync_max_abs_logprob_diff"] < 1e-3


@pytest.mark.engines
def test_the_countdown_config_runs_three_steps(tmp_path):
    """configs/tiny-countdown.yaml, 3 steps: its reasoning-gym split (+ and - only), scored by the task's own
    score_answer, with its reflection markers counted. On the arithmetic base model, which make test builds anyway
    (the countdown base takes minutes more to build: make test-slow trains the config itself)."""
    from rl.train import train

    cfg = load_config("configs/tiny-countdown.yaml", [
        "model.path=models/tiny-moe-base", "trainer.steps=3", "trainer.prompts_per_step=2", "rollout.n=4",
        "rollout.max_new_tokens=24", "data.eval_size=4", "eval.sets.countdown.size=4", "eval.n=2", "eval.k=[1]",
        "run.save_checkpoint=false", "log.plot=false", f"run.dir={tmp_path}"])
    assert cfg.log.reflection_markers == ["no, try"]
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    assert all(m["reward/reasoning_gym/error"] == 0 and 0 <= m["reward/accuracy"] <= 1 for m in lines[1:])
    assert all(0 <= m["response/reflection_rate"] <= 1 for m in lines[1:]) and "eval/countdown/pass@1" in lines[3]
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert "Final answer format instructions" in rows[0]["prompt"]  # reasoning-gym's countdown prompt


def test_data_mix_joins_sources_each_by_its_format():
    """data.mix: rows of several sources, each read by its own format, renumbered uniquely; data_source set."""
    from rl.run.session import load_data

    cfg = load_config("configs/tiny.yaml", [
        f"data.train={FIXTURES}/gsm8k.jsonl", "data.format=gsm8k", f"data.eval={FIXTURES}/gsm8k.jsonl",
        f"data.mix=[{{path: {FIXTURES}/apps.jsonl, format: apps}}, {{path: {FIXTURES}/math.jsonl, format: math, size: 3, "
        "data_source: algebra}]", f"eval.sets={{code: {{path: {FIXTURES}/mbpp.jsonl, format: mbpp, size: 2}}}}"])
    train, _, sets = load_data(cfg, load_tokenizer("models/tiny-moe-base"), trainable=True)
    assert [r.index for r in train.rows] == list(range(8 + 2 + 3)) and len(train.ids) == 13
    assert [r.data_source for r in train.rows] == ["gsm8k"] * 8 + ["code"] * 2 + ["algebra"] * 3
    assert train.rows[8].question.startswith("Read two integers") and train.rows[10].answer == ANSWERS[0]
    assert [r.data_source for r in sets["code"].rows] == ["code", "code"]
    from rl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.mix\[0\].format .csv. is not one of"):
        load_config("configs/tiny.yaml", ["data.mix=[{path: x.jsonl, format: csv}]"])


def test_heldout_accuracy_scores_each_source_by_its_own_accuracy_verifier():
    from rl.evaluate import accuracy_only

    reward = accuracy_only(load_config("configs/tiny-mixed.yaml").reward)
    assert [t.verifier for t in reward.terms] == ["math"]
    assert [t.verifier for t in reward.sources["code"].terms] == ["code"]
