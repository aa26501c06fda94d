"""The "math" verifier on answer forms (docs/rewards.md, "What counts as equal"), its policies and its selection.

Each form has a right answer written another way (it counts) and a wrong one (it does not).
"""

import pickle

import pytest

import rewards
from rewards import score_batch
from rewards.math.answer import select_answer
from rewards.math.verifier import MathVerifier, math_reward, math_verifier

# (form, response, gold, expected status): "ok" scores 1, every other status 0.
FORMS = [
    ("interval", "\\boxed{\\left[0, \\frac{1}{2}\\right)}", "[0, 0.5)", "ok"),
    ("interval", "\\boxed{[0, \\frac{1}{2}]}", "[0, 0.5)", "wrong"),
    ("interval", "$(-\\infty, 1) \\cup (2, \\infty)$", "(-\\infty,1)\\cup(2,\\infty)", "ok"),
    ("interval", "\\boxed{(2,12) \\cup (12,102)}", "(2, 12) \\cup (12, 102)", "ok"),  # not 12102
    ("interval", "\\boxed{(-\\infty, 1] \\cup (2, \\infty)}", "(-\\infty,1)\\cup(2,\\infty)", "wrong"),
    ("interval", "\\boxed{(2, \\infty)}", "x > 2", "ok"),  # an interval answers an inequality ...
    ("interval", "\\boxed{x > 2}", "(2, \\infty)", "wrong"),  # ... but restating it does not answer an interval
    ("inequality", "\\boxed{x \\geq 5}", "x >= 5", "ok"),
    ("inequality", "\\boxed{5 \\leq x}", "x \\geq 5", "ok"),
    ("inequality", "\\boxed{x \\lt 3}", "3 > x", "ok"),
    ("inequality", "\\boxed{x \\gt 3}", "x > 3", "ok"),
    ("inequality", "\\boxed{x \\neq 3}", "x != 3", "ok"),
    ("inequality", "Therefore $x \\geq 5$ is the solution.", "$x >= 5$", "ok"),
    ("inequality", "\\boxed{x > 5}", "x \\geq 5", "wrong"),
    ("inequality", "\\boxed{5 \\geq x}", "x \\geq 5", "wrong"),
    ("inequality", "\\boxed{x \\neq 4}", "x != 3", "wrong"),
    ("set", "\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", "ok"),
    ("set", "\\boxed{\\{\\sqrt{2}, -\\sqrt{2}\\}}", "\\{-\\sqrt{2}, \\sqrt{2}\\}", "ok"),
    ("set", "\\boxed{\\{1, 2\\}}", "\\{1,2,3\\}", "wrong"),
    ("tuple", "\\boxed{\\left(\\frac{1}{2}, -2\\right)}", "(0.5,-2)", "ok"),
    ("tuple", "\\boxed{(-2, \\frac{1}{2})}", "(0.5,-2)", "wrong"),
    ("list", "\\boxed{3, 1, 2}", "1, 2, 3", "ok"),  # a list of solutions has no order
    ("list", "\\boxed{x = 1, x = 2}", "1, 2", "ok"),
    ("list", "\\boxed{1, 2}", "1, 2, 3", "wrong"),
    ("matrix", "\\boxed{\\begin{bmatrix}1 & 2 \\\\ 3 & 4\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "ok"),
    ("matrix", "$\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]$", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "ok"),
    ("matrix", "\\boxed{\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}0 & 0 \\\\ 0 & 1\\end{pmatrix}}",
     "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "ok"),
    ("matrix", "\\boxed{\\begin{bmatrix}1 & 2 \\\\ 4 & 3\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "wrong"),
    ("equation", "\\boxed{(p,q)=(3,2)}", "(3,2)", "ok"),
    ("equation", "\\boxed{k = \\frac{1}{3}}", "1/3", "ok"),
    ("equation", "\\boxed{y = -\\frac{1}{2}x + \\frac{3}{4}}", "2x+4y-3=0", "ok"),  # an equation gold keeps `y =`
    ("equation", "\\boxed{(p,q)=(2,3)}", "(3,2)", "wrong"),
    ("equation", "\\boxed{k = \\frac{1}{2}}", "1/3", "wrong"),
    ("equation", "\\boxed{y = -\\frac{1}{2}x + 1}", "2x+4y-3=0", "wrong"),
    ("text", "\\boxed{\\text{E}}", "E", "ok"),
    ("text", "$E$", "\\text{E}", "ok"),  # untagged: no_answer before
    ("text", "\\boxed{\\text{D}}", "\\text{E}", "wrong"),
    ("unit", "\\boxed{12\\text{ cm}^2}", "12", "ok"),
    ("unit", "The area is 12 meters.", "12", "ok"),
    ("unit", "It costs \\$12", "12", "ok"),  # an escaped \$ is a dollar sign, not math
    ("unit", "\\boxed{13\\text{ cm}}", "12", "wrong"),
    ("percent", "\\boxed{28\\%}", "28", "ok"),
    ("percent", "\\boxed{0.28}", "28\\%", "ok"),
    ("percent", "<answer>$28$ percent</answer>", "$28\\%$", "ok"),  # raised TypeError before
    ("percent", "\\boxed{29\\%}", "28\\%", "wrong"),
    ("percent", "\\boxed{28}", "0.28", "wrong"),
    ("thousands", "\\boxed{1 000}", "1000", "ok"),
    ("thousands", "\\boxed{11,\\! 111,\\! 100}", "11111100", "ok"),
    ("thousands", "The total is 1 000", "1000", "ok"),
    ("thousands", "\\boxed{1 001}", "1000", "wrong"),
    ("thousands", "\\boxed{12102}", "(12,102)", "wrong"),
    ("multiple_boxed", "\\boxed{1}\\boxed{2}", "1,2", "ok"),
    ("multiple_boxed", "$\\boxed{1,2}$", "\\boxed{1}\\boxed{2}", "ok"),
    ("multiple_boxed", "\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}", "(2, 2), (6, 2)", "ok"),
    ("multiple_boxed", "\\boxed{1} or \\boxed{2}", "1", "wrong"),  # a hedge
    ("multiple_boxed", "\\boxed{1}\\boxed{3}", "1,2", "wrong"),
    ("sqrt", "\\boxed{4.123105625617661}", "\\sqrt{17}", "ok"),
    ("sqrt", "\\boxed{\\sqrt{17}}", "4.123105625617661", "ok"),
    ("sqrt", "\\boxed{4.12}", "\\sqrt{17}", "wrong"),
    ("sqrt", "\\boxed{\\sqrt{19}}", "4.123105625617661", "wrong"),
    ("float", "\\boxed{0.0833333333333333}", "\\frac{1}{12}", "ok"),  # a double's printout
    ("float", "\\boxed{0.0833333}", "\\frac{1}{12}", "wrong"),  # a rounded decimal is not 1/12
    ("decimal_comma", "\\boxed{1,22}", "1.22", "ok"),
    ("decimal_comma", "\\boxed{1000,99}", "1000.99", "ok"),
    ("decimal_comma", "\\boxed{1,22}", "1, 22", "ok"),  # against a list it is a list
    ("decimal_comma", "\\boxed{1.22}", "1,22", "wrong"),  # a gold is read as written
    ("decimal_comma", "\\boxed{1,23}", "1.22", "wrong"),
    ("expression", "$\\frac{10}{9}$", "10/9", "ok"),  # was graded as the last number, 9
    ("expression", "so it is $[0,1)$", "[0,1)", "ok"),
    ("expression", "Final Answer: The largest $n$ is 34.", "34", "ok"),
    ("expression", "$\\frac{10}{9}$", "10/9 + 1", "wrong"),
    ("expression", "\\boxed{255} ... The final answer is $10,455$. I hope it is correct.", "10455", "ok"),
    ("expression", "no mathematics in here", "5", "no_answer"),
    ("expression", "it is $-[0,1)$", "1", "no_answer"),  # math that does not parse: no number inside it counts
]


@pytest.fixture(scope="module")
def form_results():
    return score_batch([("math", r, g, {}) for _, r, g, _ in FORMS], workers=2, timeout_s=6.0)


@pytest.mark.parametrize("idx", range(len(FORMS)), ids=[f"{c[0]}-{i}" for i, c in enumerate(FORMS)])
def test_form(form_results, idx):
    _, response, gold, status = FORMS[idx]
    got = form_results[idx]
    assert (got.status, got.score) == (status, 1.0 if status == "ok" else 0.0), (response, gold, got)


def test_every_form_has_a_right_and_a_wrong_case():
    forms = {f for f, *_ in FORMS}
    for form in forms:
        statuses = {s for f, _, _, s in FORMS if f == form}
        assert "ok" in statuses and statuses - {"ok"}, form


@pytest.mark.parametrize(
    "verifier, response, gold, status",
    [
        (math_reward(untagged="none"), "\\boxed{5}", "5", "no_answer"),
        (math_reward(untagged="none"), "<answer>5</answer>", "5", "ok"),
        (math_reward(untagged="boxed"), "\\boxed{5}", "5", "ok"),
        (math_reward(untagged="boxed"), "The answer is 5", "5", "no_answer"),
        (math_reward(untagged="boxed"), "so $5$", "5", "no_answer"),
        (math_reward(untagged="expression"), "so $5$", "5", "ok"),
        (math_reward(decimal_comma="never"), "\\boxed{1,22}", "1.22", "wrong"),
        (math_reward(decimal_comma="both"), "\\boxed{1.22}", "1,22", "ok"),
        (math_reward(decimal_comma="both"), "\\boxed{0,111}", "0.111", "ok"),
    ],
)
def test_policies(verifier, response, gold, status):
    assert verifier(response, gold).status == status


def test_factory_names_and_registry():
    assert math_reward() == math_verifier and math_verifier.name == "math"
    assert math_reward(untagged="none").name == "math(untagged='none', decimal_comma='prediction')"
    assert rewards.get_verifier("math") is math_verifier
    product = rewards.get_verifier("math(untagged='boxed')")
    assert isinstance(product, MathVerifier) and product.untagged == "boxed"
    assert pickle.loads(pickle.dumps(product)) == product
    with pytest.raises(ValueError, match="untagged"):
        math_reward(untagged="sometimes")
    with pytest.raises(ValueError, match="decimal_comma"):
        math_reward(decimal_comma="yes")


def test_factory_products_run_in_the_workers():
    out = score_batch([("math(untagged='none')", "\\boxed{5}", "5", {}), ("math(untagged='boxed')", "\\boxed{5}", "5", {})],
                      workers=2)
    assert [r.status for r in out] == ["no_answer", "ok"]


@pytest.mark.parametrize(
    "response, expected",
    [
        ("\\boxed{1}, \\boxed{2} and \\boxed{3}", ("1, 2, 3", "boxed")),
        ("\\boxed{5}\\boxed{5}", ("5", "boxed")),  # a repeated box counts once
        ("first \\boxed{4}, finally \\boxed{5}", ("5", "boxed")),  # prose between boxes ends the list
        ("$y_1 = \\boxed{2}$ and $y_2 = \\boxed{3}$", ("2, 3", "boxed")),
        ("\\boxed{\\boxed{5}}", ("5", "boxed")),
        ("\\boxed{5}. I checked: the answer is correct.", ("5", "boxed")),  # a remark does not replace the box
        ("\\boxed{4}. Oops, the answer is 5.", ("5", "answer_is")),  # a later answer does
        ("so $\\frac{10}{9}$.", ("\\frac{10}{9}", "expression")),
        ("It grows by $28$ percent", ("28\\%", "expression")),
        ("Soucis : 2,74 $ a..", ("2,74", "expression")),
        ("</answer><answer>5", ("5", "number")),  # math-verify's anchors miss >5: the last number
        ("AZYUK2A", None),  # a digit inside a word is no number
        ("\\boxed{\\frac{1}{2}", ("2", "number")),  # an unclosed box is cut-off output: no expression read in it
        ("<answer>The total is 12</answer>", ("The total is 12", "answer_tag")),  # prose is not an answer ...
        ("<answer>Answer $ 9 $</answer>", ("9", "answer_tag")),  # ... but math marked as math in it is
        ("x" * 50_000 + " so $7$", ("7", "expression")),
    ],
)
def test_selection(response, expected):
    assert select_answer(response) == expected
