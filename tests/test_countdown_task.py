"""The countdown base model's corpus (rl/tasks/countdown/base_model.py): searches compute every step right and
stop at a hit that reasoning-gym's own score accepts; a longer budget succeeds more often; no document holds a
held-out or eval problem."""

import re

import reasoning_gym

from rl.tasks.countdown import base_model as cd


def test_a_chain_computes_every_step_and_writes_the_expression_it_computed():
    steps, value, expr = cd.chain([9, 5, 1, 2], ["+", "-", "-"])
    assert steps == "9+5=14, 14-1=13, 13-2=11" and value == 11 and expr == "9+5-1-2" and eval(expr) == 11


def test_searches_stop_at_a_hit_that_the_task_scores_right():
    data = reasoning_gym.create_dataset("countdown", size=300, seed=cd.TRAIN_SEED, **cd.SPLIT)
    rows = list(data)
    rng = cd.random.Random(0)
    hits = 0
    for row in rows:
        text = cd.search(row["metadata"]["numbers"], row["metadata"]["target"], rng)
        answer = re.search(r"<answer> (.*) </answer>", text).group(1)
        for a, op, b, value in re.findall(r"(-?\d+)([+-])(\d+)=(-?\d+)", text):
            assert cd.OPS[op](int(a), int(b)) == int(value), text
        if " yes " in text:
            hits += 1
            assert data.score_answer(answer, row) == 1.0, text
        else:  # the budget ran out: it says so and answers its last candidate, which misses
            assert text.count(cd.RETRY) == text.count(" no") - 1 and data.score_answer(answer, row) < 1.0
        exprs = re.findall(r"(?:\. |try )([\d+-]+):", text)
        assert len({cd.signed(*parse(e)) for e in exprs}) == len(exprs), text  # no sum tried twice
    assert 0.5 < hits / len(rows) < 0.9


def parse(expr: str) -> tuple[list[int], list[str]]:
    numbers = [int(n) for n in re.findall(r"^-?\d+|\d+", expr)]
    return numbers, re.findall(r"(?<=\d)[+-]", expr)


def test_a_longer_budget_succeeds_more_often():
    rows = list(reasoning_gym.create_dataset("countdown", size=300, seed=cd.TRAIN_SEED, **cd.SPLIT))
    rng = cd.random.Random(1)

    def success(tries: int) -> float:
        found = 0
        for row in rows:
            numbers, target = row["metadata"]["numbers"], row["metadata"]["target"]
            seen = set()
            found += any(cd.chain(*cd.fresh_candidate(numbers, target, rng, seen))[1] == target for _ in range(tries))
        return found / len(rows)

    one, six = success(1), success(6)
    assert 0.2 < one < 0.5 and six > one + 0.4, (one, six)


def test_no_document_holds_a_held_out_or_eval_problem(monkeypatch):
    rows = cd.training_rows(1000)
    assert len(rows) > 300 and not {cd.problem(r) for r in rows} & cd.held_out_problems()
    monkeypatch.setattr(cd, "TRAIN_ROWS", 1000)  # the corpus draws from these rows
    docs = cd.corpus(3000, 0)
    task = [d for d in docs if "Assistant:" in d]  # the rest are arithmetic drills
    searching = sum("a quick guess" not in d for d in task) / len(task)
    assert 0.75 < len(task) / len(docs) < 0.85 and 0.15 < searching < 0.25 and any(cd.RETRY in d for d in docs)
