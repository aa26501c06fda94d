"""The embedded code task: small Python functions `f(x)` of integer x, each described in words, with hidden tests,
in a train split and a disjoint held-out split.

`python -m rl.tasks.code.task` rewrites the shipped JSONL files in data/ (deterministic). Each row's answer is a
`call` test spec of the code verifier (rewards/code/verifier.py): f on six inputs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "data"
HELDOUT_SIZE = 300
SEED = 4321
INPUTS = [0, 1, 2, 5, 11, 20]  # the hidden tests call f on these

# family -> (description with {a} and {b}, the Python expression, the ranges of a and b)
FAMILIES = {
    "affine": ("{a} times x plus {b}", "{a} * x + {b}", range(2, 10), range(1, 31)),
    "mod": ("x modulo {a} plus {b}", "x % {a} + {b}", range(2, 10), range(1, 31)),
    "max": ("the larger of x and {a}, plus {b}", "max(x, {a}) + {b}", range(1, 31), range(1, 11)),
    "reverse": ("{a} minus x, times {b}", "({a} - x) * {b}", range(1, 31), range(2, 10)),
}


def question(family: str, a: int, b: int) -> str:
    return f"Write a Python function f(x) that returns {FAMILIES[family][0].format(a=a, b=b)}."


def solution(family: str, a: int, b: int) -> str:
    """The expression f returns, e.g. `3 * x + 7`."""
    return FAMILIES[family][1].format(a=a, b=b)


def tests(family: str, a: int, b: int) -> dict:
    """The hidden tests: a code-verifier `call` spec of f on INPUTS."""
    fn = eval(f"lambda x: {solution(family, a, b)}")  # our own template, never model output
    return {"kind": "call", "fn_name": "f", "cases": [{"args": [x], "output": fn(x)} for x in INPUTS]}


def problems() -> list[tuple[str, int, int]]:
    return [(f, a, b) for f, (_, _, ra, rb) in FAMILIES.items() for a in ra for b in rb]


def splits(seed: int = SEED) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Every (family, a, b), split into (train, heldout); the two never overlap."""
    items = problems()
    random.Random(seed).shuffle(items)
    return items[HELDOUT_SIZE:], items[:HELDOUT_SIZE]


def write(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = splits()
    for name, items in (("train", train), ("heldout", heldout)):
        with open(out / f"{name}.jsonl", "w") as f:
            for fam, a, b in items:
                f.write(json.dumps({"question": question(fam, a, b), "answer": json.dumps(tests(fam, a, b)),
                                    "data_source": "code"}) + "\n")


if __name__ == "__main__":
    write()
