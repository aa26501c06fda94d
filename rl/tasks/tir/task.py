"""The embedded tool task: the product of a 4-digit and a 3-digit number, exact. A guess is almost never right;
a Python call is. Train and held-out splits are disjoint.

`python -m rl.tasks.tir.task` rewrites the shipped JSONL files in data/ (deterministic).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "data"
TRAIN_SIZE = 20000
HELDOUT_SIZE = 512
SEED = 4321


def question(a: int, b: int) -> str:
    return f"What is {a} * {b}?"


def splits(seed: int = SEED) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(train, heldout) pairs (a, b), a in 1000..9999 and b in 100..999; the two never share a pair."""
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < TRAIN_SIZE + HELDOUT_SIZE:
        pairs.add((rng.randint(1000, 9999), rng.randint(100, 999)))
    ordered = sorted(pairs)
    rng.shuffle(ordered)
    return ordered[HELDOUT_SIZE:], ordered[:HELDOUT_SIZE]


def write(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = splits()
    for name, pairs in (("train", train), ("heldout", heldout)):
        with open(out / f"{name}.jsonl", "w") as f:
            for a, b in pairs:
                f.write(json.dumps({"question": question(a, b), "answer": str(a * b)}) + "\n")


if __name__ == "__main__":
    write()
