"""math-verify 0.9.0's own test cases (tests/data/mathverify_cases.json) against purerl's "math" verifier.

A prediction is presented as-is, as a user calls the verifier on a model's output (the agreement asserted >= 95%),
and wrapped in <answer>...</answer> (reported, with its own floor). Every row purerl disagrees with is listed
below, as in docs/rewards.md, so that a new disagreement fails here until it is explained there.
Numbers: `PYTHONPATH=. python -m pytest -q -s tests/test_rewards_mathverify.py`.
"""

import json
from pathlib import Path

import pytest

from rewards import score_batch

FIXTURE = json.loads((Path(__file__).parent / "data" / "mathverify_cases.json").read_text())
CASES = FIXTURE["cases"]

# Rows purerl deliberately disagrees with, in both presentations (docs/rewards.md says why).
DISAGREE = {
    "test_all.py::test_number_extraction[6]": "gold 1,22 is read as written (a list); decimal_comma='both' reads 1.22",
    "test_all.py::test_latex_notation[5]": "label for LaTeX-only extraction; with expressions too, math-verify says 1",
    "test_all.py::test_latex_notation[6]": "label for LaTeX-only extraction; with expressions too, math-verify says 1",
    "test_all.py::test_precision[0]": "0.3333 is not 1/3 (the row asks for 4-decimal rounding)",
    "test_all.py::test_complex_math_expressions[7]": "0.33 is not 1/3 (the row asks for 2-decimal rounding)",
    "test_all.py::test_complex_math_expressions[13]": "2.6667 is not 8/3 (the row asks for 2-decimal rounding)",
    "test_all.py::test_set_rel_assymetry[2]": "an inequality does not answer an interval (the row sets allow_set_relation_comp)",
    "test_numina_cases.py::test_numina_cases[24]": "the gold is malformed (unclosed \\\\boxed{): error, never a score",
    "test_strict.py::test_strict_variable_comparison[1]": "f(y) is not f(x) (the row sets strict=False)",
    "test_yujianll.py::test_string_extraction[9]": "1+1/e is not 1-1/e (math-verify reads both as 1)",
}
# Rows that disagree only when wrapped: an <answer> block of prose without inline math is graded as written.
WRAPPED_ONLY = {
    "test_all.py::test_number_extraction[13]": "prose block",
    "test_all.py::test_number_extraction[14]": "prose block",
    "test_all.py::test_number_extraction[15]": "prose block",
    "test_all.py::test_number_extraction[16]": "prose block",
    "test_all.py::test_math_extraction_edge_cases[0]": "prose block",
}
PRESENTATIONS = {"as-is": ("{}", 0.95, DISAGREE), "wrapped": ("<answer>{}</answer>", 0.94, DISAGREE | WRAPPED_ONLY)}


def test_fixture_names_its_source():
    assert FIXTURE["source"].startswith("huggingface/Math-Verify") and FIXTURE["license"].startswith("Apache-2.0")
    assert FIXTURE["version"] == "0.9.0" and len(FIXTURE["commit"]) == 40
    assert len(CASES) == 276 and len({c["id"] for c in CASES}) == len(CASES)
    assert set(DISAGREE) | set(WRAPPED_ONLY) <= {c["id"] for c in CASES}


@pytest.mark.parametrize("presentation", PRESENTATIONS)
def test_agreement_with_math_verify_labels(presentation):
    template, floor, documented = PRESENTATIONS[presentation]
    out = score_batch([("math", template.format(c["pred"]), c["gold"], {}) for c in CASES], workers=2, timeout_s=10.0)
    missed = {c["id"]: (c["expected"], r.status, r.info) for c, r in zip(CASES, out) if (r.score == 1.0) != bool(c["expected"])}
    agree = len(CASES) - len(missed)
    print(f"\nmath-verify 0.9.0 cases, {presentation}: purerl agrees on {agree}/{len(CASES)} = {agree / len(CASES):.1%}")
    assert agree >= floor * len(CASES)
    assert set(missed) == set(documented), {k: v for k, v in missed.items() if k not in documented}
