"""Loads prompt rows through `datasets` (local JSONL/Parquet, a hub name, or a procedural task) and renders them.

A row's columns are read by its dataset's format (rl/data/formats.py: purerl, verl, gsm8k, math,
conversational); a bad row stops with the file, the row index and the key. Prompts are rendered by
rl/data/templates.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rl.data.formats import FORMATS, RowError
from rl.data.templates import render, token_ids
from rl.errors import UserError


class DatasetError(UserError):
    """A dataset is missing, empty, or has a bad row."""


@dataclass(frozen=True)
class PromptRow:
    index: int
    """Position in the source dataset (the data ledger records it)."""
    prompt: str | list[dict[str, str]]
    """Text, or chat messages [{role, content}, ...]."""
    answer: str
    """The reference handed to the verifiers."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the verifiers."""
    data_source: str = "default"
    """Selects the row's reward terms (reward.sources) and splits the metrics per source."""
    info: dict[str, Any] = field(default_factory=dict)
    """Kept with the row (verl's extra_info, a GSM8K solution), never passed to a verifier."""

    @property
    def question(self) -> str:
        """The prompt as text: itself, or the last user message."""
        from rl.data.templates import question_of

        return question_of(self.prompt)


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


def encode(rows: list[PromptRow], tokenizer, template: str, system_prompt: str = "") -> PromptSet:
    """Renders each row's prompt with the template and tokenizes it."""
    return PromptSet(rows, [token_ids(render(r.prompt, template, tokenizer, system_prompt), template, tokenizer)
                            for r in rows])


def concat(sets: list[PromptSet]) -> PromptSet:
    """One set of several sources' rows, in order, renumbered so that every index is unique."""
    rows = [row for s in sets for row in s.rows]
    return PromptSet([replace(row, index=i) for i, row in enumerate(rows)], [ids for s in sets for ids in s.ids])


def apply_template(question: str, template: str) -> str:
    """The text of a plain question under a text template (the ones that need no tokenizer)."""
    return render(question, template, None)


def _read(source: str, split: str):
    import datasets

    datasets.disable_progress_bars()
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {source}")
        check_file(path)
        builder = "parquet" if suffix == ".parquet" else "json"
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as e:  # what the checks above let through: the cause's first line, naming the file
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DatasetError(f"could not read dataset {source}: {type(e).__name__}: {first}") from None
    if path.exists():
        raise DatasetError(f"unsupported dataset file {source}: use .jsonl, .json or .parquet")
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as e:
        raise DatasetError(
            f"dataset {source!r} is neither a local .jsonl/.parquet file nor a loadable hub dataset: {e}"
        ) from e


def check_file(path: Path) -> None:
    """DatasetError naming the file and the line for what a user's file gets wrong: empty, bytes that are not UTF-8,
    a line of a .jsonl or a .json that is not valid JSON (or not an object), a .parquet that is not one."""
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty: no rows")
    if path.suffix.lower() == ".parquet":
        _check_parquet(path)
        return
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line} is not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
    if path.suffix.lower() == ".jsonl":
        _check_json_lines(path, content)
        return
    try:
        data = json.loads(content)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if data in ([], {}):
        raise DatasetError(f"{path} is empty: no rows")
    if isinstance(data, list) and not all(isinstance(r, dict) for r in data):
        bad = next(i for i, r in enumerate(data) if not isinstance(r, dict))
        raise DatasetError(f"{path}: row {bad} is a JSON {type(data[bad]).__name__}, not an object with columns")


def _check_json_lines(path: Path, content: str) -> None:
    rows = 0
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: line {n} is not valid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: line {n} is a JSON {type(row).__name__}, not an object with columns")
        rows += 1
    if rows == 0:
        raise DatasetError(f"{path} is empty: no rows")


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"{path} is not a readable Parquet file: {first}") from None
    if rows == 0:
        raise DatasetError(f"{path} is empty: no rows")


def load_prompts(source: str, split: str = "train", limit: int | None = None, format: str = "purerl",
                 keys: dict[str, str] | None = None) -> list[PromptRow]:
    """All rows of `source` (or the first `limit`) read by `format`, checked; a bad row stops with its index and
    key. `source` may be a procedural task, `reasoning_gym:<task>?size=N&seed=S` (rl/data/procedural.py)."""
    from rl.data.procedural import is_procedural, procedural_rows

    if is_procedural(source):
        rows = procedural_rows(source)
        return rows if limit is None else rows[:limit]
    if format not in FORMATS:
        raise DatasetError(f"{source}: unknown data format {format!r}; valid: {', '.join(FORMATS.names())}")
    ds = _read(source, split)
    if len(ds) == 0:
        raise DatasetError(f"{source}: dataset is empty")
    n = len(ds) if limit is None else min(limit, len(ds))
    read, keys = FORMATS.get(format), dict(keys or {})
    return [_row(i, ds[i], source, read, keys) for i in range(n)]


def _row(i: int, raw: dict[str, Any], source: str, read, keys: dict[str, str]) -> PromptRow:
    try:
        f = read(raw, keys)
    except RowError as e:
        raise DatasetError(f"{source}: row {i}, key '{e.key}': {e} (row: {raw!r:.200})") from None
    return PromptRow(i, f.prompt, f.answer, f.metadata, f.data_source, f.info)
