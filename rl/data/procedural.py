"""Procedural tasks from reasoning-gym (an optional extra, `pip install purerl[tasks]`): a split is
`reasoning_gym:<task>?size=N&seed=S[&<generator option>=<value>...]`, and the `reasoning_gym` verifier scores an
answer with the task's own `score_answer`. Rows carry their generator entry in `metadata`, so the verifier needs
nothing else; `data_source` is the task's name."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from rl.data.prompts import DatasetError, PromptRow

PREFIX = "reasoning_gym:"


def is_procedural(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_spec(source: str) -> tuple[str, dict]:
    """(task, generator options) of `reasoning_gym:<task>?size=N&seed=S&...`; size and seed are required."""
    task, _, query = source.removeprefix(PREFIX).partition("?")
    options = {k: _literal(v) for k, v in parse_qsl(query, strict_parsing=bool(query))}
    missing = [k for k in ("size", "seed") if not isinstance(options.get(k), int)]
    if not task or missing:
        raise DatasetError(f"{source}: a procedural split is reasoning_gym:<task>?size=N&seed=S (missing: "
                           f"{', '.join(missing) or 'the task'})")
    return task, options


def _literal(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def procedural_rows(source: str) -> list[PromptRow]:
    """The rows of a reasoning-gym split, generated now (deterministic for the seed)."""
    task, options = parse_spec(source)
    try:
        import reasoning_gym
    except ImportError as e:
        raise DatasetError(f"{source}: reasoning-gym is not installed (pip install -e '.[tasks]')") from e
    try:
        dataset = reasoning_gym.create_dataset(task, **options)
    except Exception as e:  # an unknown task or option: its message names it
        raise DatasetError(f"{source}: reasoning-gym cannot build it: {type(e).__name__}: {e}") from e
    return [PromptRow(i, entry["question"], str(entry["answer"]),
                      {"task": task, "entry": json.loads(json.dumps(entry, default=str))}, task)
            for i, entry in enumerate(dataset)]


def items_of(source: str) -> range | None:
    """The reasoning-gym items a procedural split draws: item i of seed S is generated from seed S + i, so a split
    of N from seed S is items S..S+N-1, and item i of seed S+1 is item i+1 of seed S (measured: reasoning-gym
    0.1.25). Two splits share problems when these ranges meet. None for a file."""
    if not is_procedural(source):
        return None
    options = parse_spec(source)[1]
    return range(options["seed"], options["seed"] + options["size"])
