"""The embedded code task: disjoint splits, hidden tests that the right function passes and the corpus's wrong
guesses fail, shipped files equal to their generator's output, and a corpus with the intended prior."""

import json
import random

import pytest

from rewards import get_verifier
from rl.tasks.code import base_model, task

CODE = get_verifier("code")


def answer(expr: str, broken: bool = False) -> str:
    return f"<think> x </think> <answer> {base_model.program(expr, broken)} </answer>"


def test_splits_are_disjoint_and_cover_every_function():
    train, heldout = task.splits()
    assert (len(train), len(heldout)) == (720, 300)
    assert not set(train) & set(heldout) and len(set(train) | set(heldout)) == len(task.problems())
    assert {f for f, _, _ in heldout} == set(task.FAMILIES)  # every family is held out


def test_shipped_files_are_the_generators_output(tmp_path):
    task.write(tmp_path)
    for name in ("train", "heldout"):
        assert (tmp_path / f"{name}.jsonl").read_text() == (task.HERE / f"{name}.jsonl").read_text()


def test_hidden_tests_by_hand():
    assert task.question("mod", 7, 3) == "Write a Python function f(x) that returns x modulo 7 plus 3."
    spec = task.tests("mod", 7, 3)
    assert [c["output"] for c in spec["cases"]] == [3, 4, 5, 8, 7, 9]  # x % 7 + 3 on 0, 1, 2, 5, 11, 20
    assert [c["output"] for c in task.tests("reverse", 4, 2)["cases"]] == [8, 6, 4, -2, -14, -32]


def test_the_right_function_passes_and_the_corpus_guesses_fail():
    rng = random.Random(0)
    for family, a, b in [("affine", 3, 7), ("mod", 5, 2), ("max", 12, 4), ("reverse", 9, 3)]:
        spec = json.dumps(task.tests(family, a, b))
        assert CODE(answer(task.solution(family, a, b)), spec).score == 1.0
        wrong = base_model.wrong_guess(family, a, b, rng)
        assert wrong != task.solution(family, a, b) and CODE(answer(wrong), spec).score < 1.0
        broken = CODE(answer(task.solution(family, a, b), broken=True), spec)
        assert (broken.score, broken.status) == (0.0, "wrong") and "SyntaxError" in broken.info["first_failure"]


def test_the_corpus_gives_a_weak_prior():
    docs = base_model.code_corpus(4000, seed=0)
    careful = sum(" so f returns " in d for d in docs) / len(docs)
    assert abs(careful - base_model.CAREFUL_SHARE) < 0.03
    rng = random.Random(1)
    guesses = [c for c in (base_model.completion("affine", 3, 7, rng) for _ in range(2000)) if "quick guess" in c]
    swapped = sum("return 7 * x + 3\n" in c for c in guesses)
    assert swapped / len(guesses) > 0.5  # the guesser's habit, which the greedy answer inherits: wrong
    mixed = base_model.corpus(2000, seed=0)
    code_share = sum("Write a Python function" in d for d in mixed) / len(mixed)
    assert abs(code_share - base_model.CODE_SHARE) < 0.01
    heldout = {task.question(*p) for p in task.splits()[1]}
    assert not any(d.split("User: ")[1].split(" Assistant:")[0] in heldout for d in docs)  # no held-out leaks


def test_maj_at_k_votes_by_program_text():
    from rl.eval.run import vote_key

    spec = json.dumps(task.tests("affine", 3, 7))
    keys = [vote_key(CODE(answer(expr), spec).info) for expr in ["3 * x + 7", "3 * x + 7", "3 * x + 8"]]
    spaced = vote_key(CODE("```python\ndef f(x):   \n\n    return 3 * x + 7\n```", spec).info)
    assert keys[0] == keys[1] == spaced != keys[2] and keys[0] == "def f(x):\n    return 3 * x + 7"


@pytest.mark.engines
def test_a_mixed_run_scores_both_sources_on_every_step(tmp_path):
    """configs/tiny-mixed.yaml, 2 short steps on the default base model (so that `make test` builds no second
    model): every step draws math and code rows, each scored by its own terms, with metrics per source."""
    from rl.config import load_config
    from rl.train import train

    cfg = load_config("configs/tiny-mixed.yaml", [
        "model.path=models/tiny-moe-base", "trainer.steps=2", "trainer.prompts_per_step=8", "rollout.n=2",
        "data.eval_size=4", "eval.sets.math.size=4", "eval.sets.code.size=4", "eval.n=2", "eval.k=[1]",
        "run.save_checkpoint=false", "log.plot=false", f"run.dir={tmp_path}"])
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if m["step"] >= 1]
    assert len(steps) == 2
    for m in steps:
        assert "reward/code/total" in m and "reward/math/total" in m  # both sources drawn on every step
        assert m["reward/code/error"] == 0 and m["reward/math/error"] == 0  # no math row reached the code verifier
        assert 0 <= m["reward/code/accuracy"] <= 1 and 0 <= m["reward/math/accuracy"] <= 1
    assert "eval/code/pass@1" in lines[0] and "eval/math/pass@1" in lines[0]
