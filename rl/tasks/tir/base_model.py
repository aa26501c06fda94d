"""Builds the embedded tool-use base policy: a tiny Qwen3-MoE pretrained on products of a 4-digit and a 3-digit
number, under the R1-Zero template.

Some of its documents compute the product with a Python block and copy the block's output into the answer; the
rest write a quick guess with the right leading digits, which is almost never exact. The documents ask in two
phrasings: the task's own ("What is a * b?") calls the tool in few of them, another ("Compute a * b.") in most.
Copying an output into the answer takes many examples to learn (15% tool documents of 48,000 were too few), and
the other phrasing supplies them while the task's phrasing keeps the base model's call rate low. So at
temperature 1 the base model calls the tool in a minority of the task's answers and is then usually right, and RL
has to discover that the call pays (configs/tiny-tir.yaml, with rollout.tools.name=python). The documents hold the output as a tool would write
it, so the model learns to ask for it with the output opening, where the engine stops.
`python -m rl.tasks.tir.base_model --out models/tiny-tir-base` (deterministic, minutes on 2 cores).
"""

from __future__ import annotations

import random

from rl.data.prompts import apply_template
from rl.tasks.pretrain import EOS, Recipe, main
from rl.tasks.tir.task import question, splits

TOOL_SHARE = 0.08  # share of the task phrasing's documents that call Python
OTHER_SHARE = 0.75  # share of the other phrasing's documents that call Python (half the corpus uses each)
GUESS_RIGHT = 0.02  # how often a quick guess is exact


def other_question(a: int, b: int) -> str:
    """The phrasing the task never asks in."""
    return f"Compute {a} * {b}."


def tool_call(a: int, b: int) -> str:
    """The call and its output, in the format of rollout.tools' defaults."""
    return f"```python\nprint({a} * {b})\n```\n```output\n{a * b}\n```\n"


def guess(a: int, b: int, rng: random.Random) -> int:
    """The product with its last three or four digits made up: close, and wrong."""
    keep = 10 ** rng.choice([3, 4])
    made_up = a * b // keep * keep + rng.randrange(keep)
    return made_up if made_up != a * b else made_up + 1


def completion(a: int, b: int, rng: random.Random, tool_share: float) -> str:
    """One corpus completion after the template's '<think>'."""
    if rng.random() < tool_share:
        return f" {tool_call(a, b)} </think> <answer> {a * b} </answer>"
    answer = a * b if rng.random() < GUESS_RIGHT else guess(a, b, rng)
    return f" a quick guess </think> <answer> {answer} </answer>"


def document(a: int, b: int, rng: random.Random) -> str:
    ask, share = (question, TOOL_SHARE) if rng.random() < 0.5 else (other_question, OTHER_SHARE)
    return apply_template(ask(a, b), "r1_zero") + completion(a, b, rng, share) + EOS


def corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    train, _ = splits()
    return [document(*rng.choice(train), rng) for _ in range(num_docs)]


RECIPE = Recipe(corpus, out="models/tiny-tir-base", num_docs=64000, vocab_size=512,
                meta={"tool_share": TOOL_SHARE, "other_share": OTHER_SHARE, "task": "tir"}, sources=("rl.tasks.tir.task",))

if __name__ == "__main__":
    main(RECIPE, __doc__)
