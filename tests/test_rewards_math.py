"""The "math" verifier on labelled cases (tests/data/rewards_math_cases.py), run through score_batch."""

import runpy
import time
from collections import Counter
from pathlib import Path

import pytest

from rewards import score_batch
from rewards.math.answer import select_answer
from rewards.math.exact import TooLarge, canonical, evaluate, parse

CASES = runpy.run_path(str(Path(__file__).parent / "data" / "rewards_math_cases.py"))["CASES"]
LIMIT_S = 6.0


def test_case_file_covers_every_category():
    counts = Counter(c[0] for c in CASES)
    assert len(CASES) >= 150
    for cat in ["select", "hedge", "number", "unit", "equation", "symbolic", "interval", "set", "tuple",
                "matrix", "complex", "pi_root", "huge", "gold_error", "hostile"]:
        assert counts[cat] >= 4, cat


@pytest.fixture(scope="module")
def results():
    t0 = time.monotonic()
    out = score_batch([("math", r, g, {}) for _, r, g, _, _ in CASES], workers=2, timeout_s=LIMIT_S)
    # Each item is hard-limited; with 2 workers the whole batch is bounded by the number of items.
    assert time.monotonic() - t0 < LIMIT_S * len(CASES) / 2 + 60
    return out


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_labelled_case(results, idx):
    cat, response, gold, score, status = CASES[idx]
    got = results[idx]
    allowed = status if isinstance(status, tuple) else (status,)
    assert (got.score, got.status in allowed) == (score, True), (response[:80], gold[:40], got)
    if got.status == "timeout":
        assert got.info["limit_s"] <= LIMIT_S


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<answer>1</answer><answer>2</answer>", ("2", "answer_tag")),
        ("\\boxed{\\frac{a}{\\sqrt{b}}}", ("\\frac{a}{\\sqrt{b}}", "boxed")),
        ("x \\boxed{1} y \\boxed{2", ("1", "boxed")),
        ("#### 12\n", ("12", "hashes")),
        ("So the answer is 3.5. Yes.", ("3.5", "answer_is")),
        ("values 1,234 and 5.5e3 then 7/8", ("7/8", "expression")),  # math-verify's extraction
        ("nothing", None),
    ],
)
def test_select_answer(response, expected):
    assert select_answer(response) == expected


def test_exact_engine_refuses_instead_of_approximating():
    assert evaluate(parse("\\frac{1}{2004!}")) != evaluate(parse("\\frac{1}{2006!}"))
    assert evaluate(parse("2^{10}+1.5e1")) == 1039
    with pytest.raises(TooLarge):
        evaluate(parse("9^{9^{9^{9}}}"))
    assert canonical(parse("9^{9^{9^{9}}}")) == "pow(9,pow(9,pow(9,9)))"


def test_gold_error_is_not_a_score():
    out = score_batch([("math", "\\boxed{1}", "\\frac{", {}), ("math", "\\boxed{1}", "\\frac{}{", {})], workers=2)
    assert [(r.score, r.status) for r in out] == [(0.0, "error"), (0.0, "error")]


# More labelled cases, beside tests/data/rewards_math_cases.py: (response, gold, score, status).
EXTRA = [
    ("<answer>The answer is 5.</answer>", "5", 1.0, "ok"),  # "the answer is" inside the block
    ("<answer>The final answer is \\frac{1}{2}</answer>", "0.5", 1.0, "ok"),
    ("<answer>5. It follows from the lemma.</answer>", "5", 1.0, "ok"),  # first sentence of the block
    ("<answer>The total is 12</answer>", "12", 0.0, "wrong"),  # prose in the block is not an answer
    ("\\boxed{\\binom{6}{3}}", "20", 1.0, "ok"),
    ("\\boxed{\\dbinom{10}{3}}", "\\binom{10}{7}", 1.0, "ok"),
    ("\\boxed{\\binom{10^{9}}{500000000}}", "1", 0.0, "wrong"),  # refused exactly, not a timeout
    ("\\boxed{\\binom{10^{9}}{500000000}}", "\\binom{10^{9}}{500000000}", 1.0, "ok"),
    ("\\boxed{\\binom{n}{2}}", "\\frac{n(n-1)}{2}", 1.0, "ok"),
    ("\\boxed{\\frac{1}{2006!}}", "\\frac{1}{2004!}", 0.0, "wrong"),
    ("\\boxed{\\frac{1}{2004!}}", "\\frac{1}{2004!}", 1.0, "ok"),
    ("\\boxed{9^{9^{9}}}", "9^{9^{9}}", 1.0, "ok"),
    ("\\boxed{9^{9^{9}}}", "9^{9^{8}}", 0.0, "wrong"),
    ("\\boxed{\\def\\x{\\x\\x}\\x}", "1", 0.0, "wrong"),
    ("\\boxed{\\gdef\\y{\\y}\\y}", "1", 0.0, "wrong"),
    ("<answer>\\boxed{\\frac{1}{2}</answer>", "\\frac{1}{2}", 0.0, ("wrong", "no_answer")),  # unclosed in the block
    ("x" * (1 << 20) + "<answer>7</answer>", "7", 1.0, "ok"),
    ("<answer>7</answer>" + "y" * (1 << 20), "7", 1.0, "ok"),
]


@pytest.fixture(scope="module")
def extra_results():
    return score_batch([("math", r, g, {}) for r, g, _, _ in EXTRA], workers=2, timeout_s=LIMIT_S)


@pytest.mark.parametrize("idx", range(len(EXTRA)))
def test_extra_case(extra_results, idx):
    response, gold, score, status = EXTRA[idx]
    got = extra_results[idx]
    allowed = status if isinstance(status, tuple) else (status,)
    assert (got.score, got.status in allowed) == (score, True), (response[:80], gold, got)
