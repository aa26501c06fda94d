"""The "math" verifier never raises on model output: odd strings a model writes, and random ones, all get a status."""

import random

import pytest

from rewards import score_batch
from rewards.math.verifier import math_reward, math_verifier

ODD = [
    "$", "$$", "$$$", "$x = $", "$1$$2$$", "\\", "\\\\\\", "\\boxed{$}", "<answer>$</answer>", "<answer>\\</answer>",
    "x^{999999999999}", "10^{10^{10^{10}}}", "1e99999999999", "2^{-10^{9}}", "(10^{9})! + x", "\\binom{10^{9}}{5} x",
    "x < y < z <", "a = b = c", "x \\leq", "\\geq 5", "5 < x > 3", "x \\neq", "\\frac{1}{0}", "0^0", "\\infty - \\infty",
    "\\sqrt{-1}", "\\log 0", "1/0", "\\begin{pmatrix}", "\\end{pmatrix}", "\\begin{pmatrix}1&\\\\&\\end{pmatrix}",
    "\\left(", "x^{", "\\frac{\\frac{\\frac{", "}{", "{{{{", "\\text{", "\\text{}", "28$ percent", "$28$ percent%",
    "%%%", "\\%", "1,,2", ",", "1 000 000 0", "0,0,0", "#### ", "the answer is", "the answer is $", "\\boxed{}\\boxed{}",
    "∞", "√2", "½", "x²", "中文答案", "\u200b5\u200b", "\x00", "\ufeff1", "∑_{k=1}^{10^9} k", "\\mathbb{R}", "\\emptyset",
    "1-" * 990 + "1", "- 1 " * 2000, "-" * 1990 + "1", "3" + "!" * 1990, "x+" * 990 + "x",  # deeper than recursion limits
]
FRAGMENTS = [
    "$", "$$", "\\", "{", "}", "(", ")", "[", "]", "^", "_", "9", "0", "12", "3.5", "1,22", "1 000", "-", "+", "*", "/",
    "=", "<", ">", "!", "%", ",", ";", ".", " ", "\n", "&", "\\\\", "x", "i", "e", "\\frac", "\\frac{1}{2}", "\\boxed{",
    "\\fbox{", "<answer>", "</answer>", "\\leq", "\\geq", "\\neq", "\\lt", "\\sqrt", "\\sqrt{", "\\begin{pmatrix}",
    "\\end{pmatrix}", "\\%", "E+99", "1e999999", "10^{10^{10}}", "9^{9^{9^{9}}}", "(10^{9})!", "\\binom{10^{9}}{5}",
    "\\prod_{k=1}^{10^{9}} k", "\\text{", "\\text{E}", "\\left(", "\\right)", "\\infty", "\\cup", "\\pm", "\\in", "\\{",
    "\\}", "\\quad", "\\text{ and }", " or ", "the answer is ", "#### ", "Final Answer: ", "\\(", "\\)", "\\[", "\\]",
    "\\def", "∞", "π", "²", "°", "€", "中", "\u200b",
]
GOLDS = ["5", "\\frac{1}{2}", "x^2+1", "[1,2)", "\\{1,2\\}", "x \\geq 5", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
         "28\\%", "(3,2)"]


def random_strings(n: int, seed: int = 0) -> list[str]:
    """n strings of up to 25 fragments of LaTeX, tags and unicode (one in seven a random code point)."""
    rng = random.Random(seed)
    return [
        "".join(rng.choice(FRAGMENTS) if rng.random() < 6 / 7 else chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 25)))
        for _ in range(n)
    ]


def _cases() -> list[tuple[str, str]]:
    strings = ODD + [f"\\boxed{{{s}}}" for s in ODD] + [f"<answer>{s}</answer>" for s in ODD] + random_strings(600)
    return [(s, GOLDS[i % len(GOLDS)]) for i, s in enumerate(strings)]


@pytest.mark.parametrize("verifier", [math_verifier, math_reward(untagged="boxed", decimal_comma="both")],
                         ids=["default", "boxed-both"])
def test_odd_model_output_always_gets_a_status(verifier):
    """In-process, so that any exception fails here instead of becoming a masked `error` in a worker."""
    for response, gold in _cases():
        r = verifier(response, gold)
        assert r.status in ("ok", "wrong", "no_answer"), (response, gold, r)


def test_odd_model_output_in_the_workers_is_never_an_error_or_a_timeout():
    out = score_batch([("math", r, g, {}) for r, g in _cases()], workers=2, timeout_s=6.0)
    bad = [(r, g, o) for (r, g), o in zip(_cases(), out) if o.status not in ("ok", "wrong", "no_answer")]
    assert not bad, bad[:5]
