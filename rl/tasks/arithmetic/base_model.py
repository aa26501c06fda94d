"""Builds the embedded base policy: a byte-level BPE tokenizer and a tiny Qwen3-MoE, pretrained briefly.

The corpus gives the model a weak prior: under the R1-Zero template it sometimes reasons digit by digit
(and is then usually right) and more often guesses a nearby number (usually wrong). RL has to discover
that reasoning pays. `python -m rl.tasks.arithmetic.base_model --out models/tiny-moe-base` (deterministic,
~minutes on 2 cores).
"""

from __future__ import annotations

import random

from rl.data.prompts import apply_template
from rl.tasks.arithmetic.task import question as make_question
from rl.tasks.arithmetic.task import splits
from rl.tasks.pretrain import EOS, Recipe, main

CAREFUL_SHARE = 0.3  # share of corpus documents that reason step by step
GUESS_RIGHT = 0.1  # how often a quick guess in the corpus is the right answer


def careful_trace(a: int, b: int) -> str:
    """Column addition in three steps, e.g. 47+85: '7+5=12 , 40+80=120 , 120+12=132'."""
    units, tens = a % 10 + b % 10, (a // 10 + b // 10) * 10
    return f"{a % 10}+{b % 10}={units} , {a // 10 * 10}+{b // 10 * 10}={tens} , {tens}+{units}={a + b}"


def completion(a: int, b: int, rng: random.Random) -> str:
    """One corpus completion after the template's '<think>'."""
    if rng.random() < CAREFUL_SHARE:
        return f" {careful_trace(a, b)} </think> <answer> {a + b} </answer>"
    guess = a + b
    if rng.random() >= GUESS_RIGHT:
        guess = max(0, a + b + rng.choice([-1, 1]) * rng.randint(1, 12))
    return f" a quick guess </think> <answer> {guess} </answer>"


def corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    train, _ = splits()
    docs = []
    for _ in range(num_docs):
        a, b = rng.choice(train)
        docs.append(apply_template(make_question(a, b), "r1_zero") + completion(a, b, rng) + EOS)
    return docs


RECIPE = Recipe(corpus, out="models/tiny-moe-base", num_docs=48000, vocab_size=512, meta={"careful_share": CAREFUL_SHARE},
                sources=("rl.tasks.arithmetic.task",))

if __name__ == "__main__":
    main(RECIPE, __doc__)
