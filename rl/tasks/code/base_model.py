"""Builds the embedded code base policy: one tiny Qwen3-MoE pretrained on addition and on small Python functions.

Its code prior is weak on purpose: under the R1-Zero template it sometimes restates the task term by term and
then writes the right function, and more often writes a quick guess, a ```python program that is usually wrong
(most often the two constants swapped, so the greedy answer is wrong; sometimes one that does not even parse). RL has to discover that restating pays. The addition half
is the arithmetic task's own corpus, so one policy serves configs/tiny-code.yaml and configs/tiny-mixed.yaml.
`python -m rl.tasks.code.base_model --out models/tiny-code-base` (deterministic, minutes on 2 cores).
"""

from __future__ import annotations

import random

from rl.data.prompts import apply_template
from rl.tasks.arithmetic import base_model as arithmetic
from rl.tasks.code.task import FAMILIES, question, solution, splits
from rl.tasks.pretrain import EOS, Recipe, main

CAREFUL_SHARE = 0.25  # share of code documents that restate the task before the program
GUESS_RIGHT = 0.1  # how often a quick guess is the right program
BROKEN_SHARE = 0.1  # share of wrong guesses that do not parse (the verifier's load-error path)
SWAP_SHARE = 0.7  # share of wrong guesses that swap the two constants
CODE_SHARE = 0.5  # share of code documents in the corpus; the rest is the arithmetic task's


def program(expr: str, broken: bool = False) -> str:
    """A fenced answer defining f; `broken` drops the colon (a SyntaxError)."""
    return f"```python\ndef f(x){'' if broken else ':'}\n    return {expr}\n```"


def careful_trace(family: str, a: int, b: int) -> str:
    """The task restated in the expression's order, e.g. 'f returns 3 times x plus 7 , so f returns 3 * x + 7'."""
    return f"f returns {FAMILIES[family][0].format(a=a, b=b)} , so f returns {solution(family, a, b)}"


def wrong_guess(family: str, a: int, b: int, rng: random.Random) -> str:
    """A wrong expression: most often the two constants swapped (the guesser's habit, so that the base model's
    most likely quick guess is wrong), else one constant off by 1..5; constants stay >= 1, never the right one."""
    if rng.random() < SWAP_SHARE:
        wrong = (b, a)
    else:
        delta = rng.choice([-1, 1]) * rng.randint(1, 5)
        wrong = (max(1, a + delta), b) if rng.random() < 0.5 else (a, max(1, b + delta))
    if wrong == (a, b):  # equal constants, or clamped back onto the right one
        wrong = (a, b + 1)
    return solution(family, *wrong)


def completion(family: str, a: int, b: int, rng: random.Random) -> str:
    """One corpus completion after the template's '<think>'."""
    if rng.random() < CAREFUL_SHARE:
        return f" {careful_trace(family, a, b)} </think> <answer> {program(solution(family, a, b))} </answer>"
    expr = solution(family, a, b) if rng.random() < GUESS_RIGHT else wrong_guess(family, a, b, rng)
    broken = expr != solution(family, a, b) and rng.random() < BROKEN_SHARE
    return f" a quick guess </think> <answer> {program(expr, broken)} </answer>"


def code_corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    train, _ = splits()
    docs = []
    for _ in range(num_docs):
        family, a, b = rng.choice(train)
        docs.append(apply_template(question(family, a, b), "r1_zero") + completion(family, a, b, rng) + EOS)
    return docs


def corpus(num_docs: int, seed: int) -> list[str]:
    """Code and addition documents, shuffled together (so the tokenizer's sample holds both)."""
    n_code = round(num_docs * CODE_SHARE)
    docs = code_corpus(n_code, seed) + arithmetic.corpus(num_docs - n_code, seed + 1)
    random.Random(seed).shuffle(docs)
    return docs


RECIPE = Recipe(corpus, out="models/tiny-code-base", num_docs=64000, vocab_size=768, tokenizer_docs=4000,
                meta={"careful_share": CAREFUL_SHARE, "code_share": CODE_SHARE, "task": "code+arithmetic"},
                sources=("rl.tasks.code.task", "rl.tasks.arithmetic.base_model", "rl.tasks.arithmetic.task"))

if __name__ == "__main__":
    main(RECIPE, __doc__)
