"""Dataset row formats: how the columns of the datasets people already have become purerl's PromptRow fields.

`data.format` picks one (`purerl`, `verl`, `gsm8k`, `math`, `conversational`, and for code `humaneval`, `mbpp`,
`apps`, `codecontests`); `data.keys` renames columns
(`{prompt: query}` reads the prompt from a column called `query`). A format is a function of one raw row that
returns its fields, raising RowError naming the key at fault; rl.data.prompts adds the file and the row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rewards.code.spec import from_asserts, from_io_lists, looks_like_code, to_spec
from rl.registry import Registry


class RowError(ValueError):
    """One row's field is missing or malformed; `key` is the column."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class RowFields:
    prompt: str | list[dict[str, str]]  # text, or chat messages [{role, content}, ...]
    answer: str  # the reference handed to the verifiers
    metadata: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the verifiers
    data_source: str = "default"  # selects the row's reward terms (reward.sources)
    info: dict[str, Any] = field(default_factory=dict)  # kept with the row, never passed to a verifier


Format = Callable[[dict[str, Any], dict[str, str]], RowFields]
FORMATS: Registry[Format] = Registry("data format")
COLUMNS = ("prompt", "question", "problem", "answer", "solution", "metadata", "data_source", "reward_model",
           "extra_info", "test", "entry_point", "text", "test_list", "test_setup_code", "input_output", "starter_code",
           "description", "public_tests", "private_tests", "generated_tests")
"""The column names a format reads, each renamable by `data.keys`."""


def column(raw: dict[str, Any], keys: dict[str, str], name: str, required: bool = True) -> Any:
    """The value of column `name` (renamed by `keys`); missing and required -> RowError."""
    col = keys.get(name, name)
    if col not in raw or raw[col] is None:
        if required:
            raise RowError(col, f"has no '{col}'")
        return None
    return raw[col]


def text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError(key, f"'{key}' must be a non-empty string, got {value!r:.80}")
    return value


def answer_text(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise RowError(key, f"'{key}' must be a non-empty string or a number, got {value!r:.80}")
    return str(value)


def prompt_value(value: Any, key: str) -> str | list[dict[str, str]]:
    """A prompt: non-empty text, or chat messages (a list of {role, content} with at least one user turn)."""
    if isinstance(value, str):
        return text(value, key)
    if not isinstance(value, list) or not value:
        raise RowError(key, f"'{key}' must be text or a list of chat messages, got {value!r:.80}")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowError(key, f"'{key}' messages need a 'role' and a 'content' string, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise RowError(key, f"'{key}' has no non-empty user message")
    return out


def mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RowError(key, f"'{key}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def source(raw: dict[str, Any], keys: dict[str, str], default: str) -> str:
    value = column(raw, keys, "data_source", required=False)
    return default if value is None else text(value, keys.get("data_source", "data_source"))


@FORMATS.register("purerl")
def purerl(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """`prompt` or `question` (text or messages), `answer`, optional `metadata` and `data_source`."""
    name = "prompt" if keys.get("prompt", "prompt") in raw else "question"
    return RowFields(prompt_value(column(raw, keys, name), keys.get(name, name)),
                     answer_text(column(raw, keys, "answer"), keys.get("answer", "answer")),
                     mapping(column(raw, keys, "metadata", required=False), "metadata"),
                     source(raw, keys, "default"))


@FORMATS.register("verl")
def verl(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """verl's parquet schema: `prompt` (chat messages), `data_source`, `reward_model: {style, ground_truth}`,
    `extra_info` (kept with the row). A ground truth that is not text or a number is kept as JSON text."""
    reward = mapping(column(raw, keys, "reward_model"), keys.get("reward_model", "reward_model"))
    if "ground_truth" not in reward or reward["ground_truth"] in (None, ""):
        raise RowError("reward_model.ground_truth", "has no 'reward_model.ground_truth'")
    truth = reward["ground_truth"]
    if looks_like_code(truth):  # PRIME / verl code rows: APPS-style tests as JSON, checked now, not mid-run
        truth = code_answer(truth, "reward_model.ground_truth")
    truth = truth if isinstance(truth, (str, int, float)) and not isinstance(truth, bool) else json.dumps(truth)
    return RowFields(prompt_value(column(raw, keys, "prompt"), keys.get("prompt", "prompt")),
                     answer_text(truth, "reward_model.ground_truth"), {},
                     text(column(raw, keys, "data_source"), keys.get("data_source", "data_source")),
                     {"style": reward.get("style"), **mapping(column(raw, keys, "extra_info", required=False),
                                                              "extra_info")})


@FORMATS.register("gsm8k")
def gsm8k(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """GSM8K: `question`, and `answer` whose last line is `#### <number>`: the reference is that number."""
    key = keys.get("answer", "answer")
    solution = text(column(raw, keys, "answer"), key)
    if "####" not in solution:
        raise RowError(key, f"'{key}' has no '#### <answer>' line")
    return RowFields(prompt_value(column(raw, keys, "question"), keys.get("question", "question")),
                     text(solution.rsplit("####", 1)[1].strip(), key), {}, source(raw, keys, "gsm8k"),
                     {"solution": solution})


@FORMATS.register("math")
def math_dataset(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """MATH / MATH-500: `problem`, and `answer`, or else `solution` whose last `\\boxed{}` is the reference."""
    from rewards.math.answer import last_boxed

    answer = column(raw, keys, "answer", required=False)
    info = {}
    if answer is None:
        key = keys.get("solution", "solution")
        solution = text(column(raw, keys, "solution"), key)
        answer = last_boxed(solution)
        if answer is None or not answer.strip():
            raise RowError(key, f"'{key}' has no complete \\boxed{{...}} answer (and the row no 'answer')")
        info["solution"] = solution
    return RowFields(prompt_value(column(raw, keys, "problem"), keys.get("problem", "problem")),
                     answer_text(answer, keys.get("answer", "answer")), {}, source(raw, keys, "math"), info)


@FORMATS.register("conversational")
def conversational(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """TRL's conversational rows: `prompt` as chat messages, and `solution` or `answer`."""
    name = "solution" if keys.get("solution", "solution") in raw else "answer"
    return RowFields(prompt_value(column(raw, keys, "prompt"), keys.get("prompt", "prompt")),
                     answer_text(column(raw, keys, name), keys.get(name, name)), {}, source(raw, keys, "default"))


def code_answer(value: Any, key: str) -> str:
    """A code reference (rewards/code/spec.py) as the JSON text the code verifier reads; malformed -> RowError."""
    try:
        return json.dumps(to_spec(value))
    except ValueError as e:
        raise RowError(key, f"'{key}' {e}") from None


def code_row(raw, keys, prompt: str, spec: dict, info_keys: tuple[str, ...] = ()) -> RowFields:
    """A code row: the prompt, its tests as the verifier's reference, data_source `code` unless the row says."""
    info = {k: raw[keys.get(k, k)] for k in info_keys if raw.get(keys.get(k, k)) is not None}
    return RowFields(prompt_value(prompt, keys.get("prompt", "prompt")), json.dumps(spec), {},
                     source(raw, keys, "code"), info)


def checked(key: str, make: Callable[[], dict]) -> dict:
    try:
        return make()
    except ValueError as e:
        raise RowError(key, f"'{key}' {e}") from None


@FORMATS.register("humaneval")
def humaneval(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """HumanEval: `prompt` (a signature and docstring), `test` (`def check(candidate)`), `entry_point`.
    The response must hold the whole function: the prompt is not prepended to it."""
    test_key, entry_key = keys.get("test", "test"), keys.get("entry_point", "entry_point")
    test, entry = text(column(raw, keys, "test"), test_key), text(column(raw, keys, "entry_point"), entry_key)
    spec = checked(test_key, lambda: to_spec({"kind": "check", "test": test, "entry_point": entry}))
    return code_row(raw, keys, column(raw, keys, "prompt"), spec, ("task_id", "canonical_solution"))


@FORMATS.register("mbpp")
def mbpp(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """MBPP (original or sanitized): `text` or `prompt`, `test_list` of asserts, optional `test_setup_code`."""
    name = "prompt" if keys.get("prompt", "prompt") in raw else "text"
    key = keys.get("test_list", "test_list")
    asserts, setup = column(raw, keys, "test_list"), column(raw, keys, "test_setup_code", required=False) or ""
    spec = checked(key, lambda: from_asserts(asserts, setup))
    return code_row(raw, keys, column(raw, keys, name), spec, ("task_id", "code"))


@FORMATS.register("apps")
def apps(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """APPS / TACO: `question`, `input_output` ({inputs, outputs[, fn_name]}, as JSON text or a mapping) and an
    optional `starter_code`, shown after the question."""
    key = keys.get("input_output", "input_output")
    tests = column(raw, keys, "input_output")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError as e:
            raise RowError(key, f"'{key}' is not JSON ({e})") from None
    if not isinstance(tests, dict) or "inputs" not in tests or "outputs" not in tests:
        raise RowError(key, f"'{key}' must hold 'inputs' and 'outputs' lists")
    spec = checked(key, lambda: from_io_lists(tests["inputs"], tests["outputs"], tests.get("fn_name")))
    question = text(column(raw, keys, "question"), keys.get("question", "question"))
    starter = column(raw, keys, "starter_code", required=False)
    if isinstance(starter, str) and starter.strip():
        question = f"{question}\n\nStart from this code:\n```python\n{starter.rstrip()}\n```"
    return code_row(raw, keys, question, spec, ("problem_id", "difficulty"))


@FORMATS.register("codecontests")
def codecontests(raw: dict[str, Any], keys: dict[str, str]) -> RowFields:
    """DeepMind CodeContests: `description`, stdio tests in `public_tests`, `private_tests` and `generated_tests`
    ({input: [...], output: [...]} each, all of them used)."""
    inputs, outputs = [], []
    for name in ("public_tests", "private_tests", "generated_tests"):
        tests = mapping(column(raw, keys, name, required=False), keys.get(name, name))
        inputs += list(tests.get("input") or [])
        outputs += list(tests.get("output") or [])
    spec = checked(keys.get("public_tests", "public_tests"), lambda: from_io_lists(inputs, outputs))
    return code_row(raw, keys, column(raw, keys, "description"), spec, ("name", "difficulty"))
