"""Dataset row formats: how the columns of the datasets people already have become purerl's PromptRow fields.

`data.format` picks one (`purerl`, `verl`, `gsm8k`, `math`, `conversational`); `data.keys` renames columns
(`{prompt: query}` reads the prompt from a column called `query`). A format is a function of one raw row that
returns its fields, raising RowError naming the key at fault; rl.data.prompts adds the file and the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
           "extra_info")
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
    import json

    reward = mapping(column(raw, keys, "reward_model"), keys.get("reward_model", "reward_model"))
    if "ground_truth" not in reward or reward["ground_truth"] in (None, ""):
        raise RowError("reward_model.ground_truth", "has no 'reward_model.ground_truth'")
    truth = reward["ground_truth"]
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
