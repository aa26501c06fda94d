"""Loads prompt rows through `datasets` (local JSONL/Parquet, or a hub name) and applies the template.

Row schema: `prompt` or `question` (str, required), `answer` (str or number, required),
`metadata` (dict, optional; passed to the verifiers as keyword arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.errors import UserError

# DeepSeek-R1-Zero's template (DeepSeek-AI 2025, Table 1). The prompt ends inside the think block,
# so a completion is "reasoning </think> <answer> x </answer>".
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and the answer is enclosed "
    "within <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {question} Assistant: <think>"
)


class DatasetError(UserError):
    """A dataset is missing, empty, or has a bad row."""


@dataclass(frozen=True)
class PromptRow:
    index: int
    """Position in the source dataset (the data ledger records it)."""
    question: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptSet:
    """Rows of a dataset with their rendered, tokenized prompts: what the collect stage draws from."""

    rows: list[PromptRow]
    ids: list[list[int]]  # token ids of each row's prompt after the template

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: list[int]) -> PromptSet:
        """The rows at these positions (of this set, not dataset indices), in that order."""
        return PromptSet([self.rows[i] for i in positions], [self.ids[i] for i in positions])

    def head(self, n: int) -> PromptSet:
        return PromptSet(self.rows[:n], self.ids[:n])

    def indices(self) -> list[int]:
        """The dataset index of each row (what rollout groups and the data ledger carry)."""
        return [r.index for r in self.rows]

    def by_index(self) -> dict[int, PromptRow]:
        return {r.index: r for r in self.rows}


def encode(rows: list[PromptRow], tokenizer, template: str) -> PromptSet:
    """Renders each row's question with the template and tokenizes it."""
    return PromptSet(rows, [tokenizer(apply_template(r.question, template))["input_ids"] for r in rows])


def apply_template(question: str, template: str) -> str:
    if template == "r1_zero":
        return R1_ZERO_TEMPLATE.format(question=question)
    if template == "none":
        return question
    raise DatasetError(f"unknown template {template!r}; valid: r1_zero, none")


def _read(source: str, split: str):
    import datasets

    datasets.disable_progress_bars()
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {source}")
        builder = "parquet" if suffix == ".parquet" else "json"
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as e:  # pyarrow's messages are long; keep the cause, name the file
            raise DatasetError(f"could not parse dataset {source}: {type(e).__name__}: {e}") from e
    if path.exists():
        raise DatasetError(f"unsupported dataset file {source}: use .jsonl, .json or .parquet")
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as e:
        raise DatasetError(
            f"dataset {source!r} is neither a local .jsonl/.parquet file nor a loadable hub dataset: {e}"
        ) from e


def _row(i: int, raw: dict[str, Any], source: str) -> PromptRow:
    question = raw.get("prompt", raw.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{source}: row {i} has no non-empty 'prompt' or 'question' string: {raw!r:.200}")
    answer = raw.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        raise DatasetError(f"{source}: row {i} has no usable 'answer' (str or number): {raw!r:.200}")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatasetError(f"{source}: row {i} 'metadata' must be a mapping, got {type(metadata).__name__}")
    return PromptRow(index=i, question=question, answer=str(answer), metadata=dict(metadata))


def load_prompts(source: str, split: str = "train", limit: int | None = None) -> list[PromptRow]:
    """All rows of `source` (or the first `limit`), checked; a bad row stops with its index."""
    ds = _read(source, split)
    columns = set(ds.column_names)
    if not columns & {"prompt", "question"} or "answer" not in columns:
        raise DatasetError(
            f"{source}: needs a 'prompt' (or 'question') column and an 'answer' column; has {sorted(columns)}"
        )
    if len(ds) == 0:
        raise DatasetError(f"{source}: dataset is empty")
    n = len(ds) if limit is None else min(limit, len(ds))
    return [_row(i, ds[i], source) for i in range(n)]
