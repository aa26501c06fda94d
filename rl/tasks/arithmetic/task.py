"""The embedded task: two-digit addition, with a train split and a disjoint held-out split.

`python -m rl.tasks.arithmetic.task` rewrites the shipped JSONL files in data/ (deterministic).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "data"
HELDOUT_SIZE = 512
SEED = 1234


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def splits(seed: int = SEED) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All pairs (a, b) in [0, 99]^2, split into (train, heldout); the two never overlap."""
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(pairs)
    return pairs[HELDOUT_SIZE:], pairs[:HELDOUT_SIZE]


def write(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = splits()
    for name, pairs in (("train", train), ("heldout", heldout)):
        with open(out / f"{name}.jsonl", "w") as f:
            for a, b in pairs:
                f.write(json.dumps({"question": question(a, b), "answer": str(a + b)}) + "\n")


if __name__ == "__main__":
    write()
