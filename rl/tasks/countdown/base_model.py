"""Builds the embedded countdown base policy: a tiny Qwen3-MoE pretrained on reasoning-gym countdown problems (3
and 4 numbers from 1-9, targets 1-20, + and -) under the R1-Zero template.

A minority of its documents search: they restate the target, then each try writes an expression over all the
numbers in the order the problem lists them (random signs, the last chosen to land nearest the target), computes it
one step at a time, and sets the result beside the target ("7 vs 7": two tokens side by side, which the tiny model
learns to compare where it did not compare a result with a target written far back); on a miss it says "no, try"
and tries another, stopping at a hit ("yes") or after its budget of tries (then it answers its last, wrong,
candidate). The budget varies from 1 to MAX_TRIES, so a longer search succeeds more often than a short one. The
rest guess an expression without computing it, which is usually wrong. So at temperature 1 the base model
sometimes searches and usually guesses, and RL has to discover that searching pays (configs/tiny-countdown.yaml). Documents come from the training seed only, and none holds a held-out or eval
problem.

A fifth of the documents are arithmetic drills with no template: chains of + and - steps, as a pretraining corpus
holds arithmetic. Without them the searches' steps were wrong half the time ("-8+3=4").

Why + and - only: with * in the searches (the first two recipes) the tiny model's arithmetic went wrong
("9*3=21", "72+1=72") and it said "yes" to wrong values, so a search rarely succeeded and RL found nothing to
reinforce. With + and - over 1-9 every step is one of a few hundred facts. Why targets 1-20: with targets 10-30
adding every number hits half the problems, and RL learned that guess instead of searching.
`python -m rl.tasks.countdown.base_model --out models/tiny-countdown-base` (deterministic, minutes on 2 cores).
"""

from __future__ import annotations

import functools
import random

from rl.data.prompts import apply_template
from rl.tasks.pretrain import EOS, Recipe, main

SPLIT = {"min_numbers": 3, "max_numbers": 4, "min_value": 1, "max_value": 9, "min_target": 1, "max_target": 20,
         "operators": ("+", "-")}
TRAIN_SEED = 1  # the training split's seed; held-out and eval splits use OTHER_SEEDS
OTHER_SEEDS = {5000: 256, 6000: 128}  # held-out and eval seeds and sizes: no document holds one of their problems;
# reasoning-gym makes item i of seed S from seed S + i, so these are clear of the training seed's first 4,000 items
SEARCH_SHARE = 0.2  # share of the task's documents that search
DRILL_SHARE = 0.2  # share of all documents that are arithmetic drills (chains of + and - over 1-9, no template)
FIRST_PLUS = 0.75  # a try's first number is added, else subtracted ("-9+2+8")
MAX_TRIES = 6  # a search's budget of tries is drawn from 1..MAX_TRIES
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}
TRAIN_ROWS = 4000  # the training seed's rows the documents draw from (generating a row takes ~3 ms)
RETRY = "no, try"  # the miss-and-retry marker (log.reflection_markers)


def chain(numbers: list[int], ops: list[str]) -> tuple[str, int, str]:
    """(the steps as computed, e.g. "9+5=14, 14-1=13", the value, the expression "9+5-1")."""
    value, expr, steps = numbers[0], str(numbers[0]), []
    for n, op in zip(numbers[1:], ops):
        new = OPS[op](value, n)
        steps.append(f"{value}{op}{n}={new}")
        expr, value = f"{expr}{op}{n}", new
    return ", ".join(steps), value, expr


def candidate(numbers: list[int], target: int, rng: random.Random) -> list:
    """A searcher's try: the numbers in the order the problem lists them (so each try copies the last one's
    numbers), random signs (the first may be -), the last sign chosen to land nearest the target."""
    first = numbers[0] if rng.random() < FIRST_PLUS else -numbers[0]
    order, ops = [first, *numbers[1:]], [rng.choice("+-") for _ in numbers[1:-1]]
    last = min("+-", key=lambda op: abs(chain(order, ops + [op])[1] - target))
    return [order, ops + [last]]


def signed(order: list[int], ops: list[str]) -> tuple[int, ...]:
    """What a try computes, whatever its order: each number with its sign."""
    return tuple(sorted([order[0]] + [n if op == "+" else -n for n, op in zip(order[1:], ops)]))


def fresh_candidate(numbers: list[int], target: int, rng: random.Random, seen: set, attempts: int = 20) -> list:
    """A candidate that computes a sum not tried yet (`seen` grows), when one turns up within `attempts` draws."""
    for _ in range(attempts):
        order, ops = candidate(numbers, target, rng)
        if signed(order, ops) not in seen:
            break
    seen.add(signed(order, ops))
    return [order, ops]


def search(numbers: list[int], target: int, rng: random.Random) -> str:
    """The target restated, then tries, each "expression: steps, value vs target" and no two alike, until one hits
    ("yes") or the budget runs out; the answer copies the last expression written."""
    tries, seen = [], set()
    for _ in range(rng.randint(1, MAX_TRIES)):
        steps, value, expr = chain(*fresh_candidate(numbers, target, rng, seen))
        tries.append(f"{expr}: {steps}, {value} vs {target}")
        if value == target:
            break
    verdict = "yes" if value == target else "no"
    return f" target {target}. " + f" {RETRY} ".join(tries) + f" {verdict} </think> <answer> {expr} </answer>"


def guess(numbers: list[int], rng: random.Random) -> str:
    order = rng.sample(numbers, len(numbers))
    return f" a quick guess </think> <answer> {chain(order, [rng.choice('+-') for _ in order[1:]])[2]} </answer>"


def problem(row: dict) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(row["metadata"]["numbers"])), row["metadata"]["target"]


@functools.cache
def held_out_problems() -> frozenset[tuple[tuple[int, ...], int]]:
    import reasoning_gym

    return frozenset(problem(r) for seed, size in OTHER_SEEDS.items()
                     for r in reasoning_gym.create_dataset("countdown", size=size, seed=seed, **SPLIT))


def training_rows(n: int) -> list[dict]:
    """The training seed's first `n` rows, less those that hold a held-out or eval problem. (The ranges hold few
    distinct problems: 4,000 rows hold 1,767, and 581 of them hold one of the 239 held-out problems.)"""
    import reasoning_gym

    held = held_out_problems()
    return [r for r in reasoning_gym.create_dataset("countdown", size=n, seed=TRAIN_SEED, **SPLIT)
            if problem(r) not in held]


def drill(rng: random.Random, chains: int = 4) -> str:
    """Arithmetic as a pretraining corpus holds it: chains of + and - over numbers from 1-9, every step written."""
    return "; ".join(chain([rng.randint(1, 9) for _ in range(rng.randint(3, 4))],
                           [rng.choice("+-") for _ in range(3)])[0] for _ in range(chains))


def corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    rows = training_rows(TRAIN_ROWS)
    docs = []
    for row in (rng.choice(rows) for _ in range(num_docs)):
        if rng.random() < DRILL_SHARE:
            docs.append(drill(rng) + EOS)
            continue
        numbers, target = row["metadata"]["numbers"], row["metadata"]["target"]
        body = search(numbers, target, rng) if rng.random() < SEARCH_SHARE else guess(numbers, rng)
        docs.append(apply_template(row["question"], "r1_zero") + body + EOS)
    return docs


RECIPE = Recipe(corpus, out="models/tiny-countdown-base", num_docs=60000, vocab_size=1024,
                meta={"search_share": SEARCH_SHARE, "drill_share": DRILL_SHARE, "max_tries": MAX_TRIES,
                      "task": "countdown"})

if __name__ == "__main__":
    main(RECIPE, __doc__)
