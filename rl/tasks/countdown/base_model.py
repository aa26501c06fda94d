"""Builds the embedded countdown base policy: a tiny Qwen3-MoE pretrained on reasoning-gym countdown problems (3
and 4 numbers from 1-9, targets 10-40) under the R1-Zero template.

A minority of its documents search: each try chains the numbers in some order with + - *, computes every step,
and compares the result with the target; on a miss it says "no, try" and tries again, stopping at a hit ("yes")
or after its budget of tries (then it answers its last, wrong, candidate). The budget varies from 1 to MAX_TRIES,
so a longer search succeeds more often than a short one. The rest guess an expression without computing it,
which is rarely right. So at temperature 1 the base model sometimes searches and usually guesses, and RL has to
discover that searching longer pays (configs/tiny-countdown.yaml). Documents come from the training seed only.
`python -m rl.tasks.countdown.base_model --out models/tiny-countdown-base` (deterministic, minutes on 2 cores).
"""

from __future__ import annotations

import functools
import random

from rl.data.prompts import apply_template
from rl.tasks.pretrain import EOS, Recipe, main

SPLIT = {"min_numbers": 3, "max_numbers": 4, "min_value": 1, "max_value": 9, "min_target": 10, "max_target": 40}
TRAIN_SEED = 1  # the training split's seed; held-out and eval splits use OTHER_SEEDS
OTHER_SEEDS = (5000, 6000)  # no document holds a problem of these seeds' first 1,024 (the same numbers and target);
# reasoning-gym makes item i of seed S from seed S + i, so these are clear of the training seed's first 4,000 items
SEARCH_SHARE = 0.3  # share of documents that search
MAX_TRIES = 6  # a search's budget of tries is drawn from 1..MAX_TRIES
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
TRAIN_ROWS = 4000  # the training seed's rows the documents draw from (generating a row takes ~3 ms)
RETRY = "no, try"  # the miss-and-retry marker (log.reflection_markers)


def chain(numbers: list[int], ops: list[str]) -> tuple[str, int, str]:
    """(the steps as computed, e.g. "9+5=14, 14+1=15", the value, the expression "(9+5)+1")."""
    value, expr, steps = numbers[0], str(numbers[0]), []
    for n, op in zip(numbers[1:], ops):
        new = OPS[op](value, n)
        steps.append(f"{value}{op}{n}={new}")
        expr = f"{expr}{op}{n}" if len(steps) == 1 else f"({expr}){op}{n}"
        value = new
    return ", ".join(steps), value, expr


def candidate(numbers: list[int], target: int, rng: random.Random) -> list:
    """A searcher's try: the numbers in a random order, random operations, and the last one chosen to land
    nearest the target."""
    order = rng.sample(numbers, len(numbers))
    ops = [rng.choice("+-*") for _ in order[1:-1]]
    last = min("+-*", key=lambda op: abs(chain(order, ops + [op])[1] - target))
    return [order, ops + [last]]


def search(numbers: list[int], target: int, rng: random.Random) -> str:
    """Tries, each "expression: steps", until one hits ("yes") or the budget runs out; the answer copies the last
    expression written."""
    tries = []
    for _ in range(rng.randint(1, MAX_TRIES)):
        steps, value, expr = chain(*candidate(numbers, target, rng))
        if value == target:
            return " " + f" {RETRY} ".join(tries + [f"{expr}: {steps} yes"]) + f" </think> <answer> {expr} </answer>"
        tries.append(f"{expr}: {steps}")
    return " " + f" {RETRY} ".join(tries) + f" no </think> <answer> {expr} </answer>"


def guess(numbers: list[int], rng: random.Random) -> str:
    order = rng.sample(numbers, len(numbers))
    return f" a quick guess </think> <answer> {chain(order, [rng.choice('+-*') for _ in order[1:]])[2]} </answer>"


def problem(row: dict) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(row["metadata"]["numbers"])), row["metadata"]["target"]


@functools.cache
def held_out_problems() -> frozenset[tuple[tuple[int, ...], int]]:
    import reasoning_gym

    return frozenset(problem(r) for s in OTHER_SEEDS
                     for r in reasoning_gym.create_dataset("countdown", size=1024, seed=s, **SPLIT))


def training_rows(n: int) -> list[dict]:
    """The training seed's first `n` rows, less those that hold a held-out or eval problem. (The ranges hold few
    distinct problems: 10,000 rows hold about 3,900, and a row of the training seed often holds a problem of the
    other seeds.)"""
    import reasoning_gym

    held = held_out_problems()
    return [r for r in reasoning_gym.create_dataset("countdown", size=n, seed=TRAIN_SEED, **SPLIT)
            if problem(r) not in held]


def corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    rows = training_rows(TRAIN_ROWS)
    docs = []
    for row in (rng.choice(rows) for _ in range(num_docs)):
        numbers, target = row["metadata"]["numbers"], row["metadata"]["target"]
        body = search(numbers, target, rng) if rng.random() < SEARCH_SHARE else guess(numbers, rng)
        docs.append(apply_template(row["question"], "r1_zero") + body + EOS)
    return docs


RECIPE = Recipe(corpus, out="models/tiny-countdown-base", num_docs=48000, vocab_size=1024,
                meta={"search_share": SEARCH_SHARE, "max_tries": MAX_TRIES, "task": "countdown"})

if __name__ == "__main__":
    main(RECIPE, __doc__)
