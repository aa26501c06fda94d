"""Evaluating the engines' current weights on the eval sets: n samples at eval.temperature plus a greedy answer
per problem, each scored by its row's accuracy verifier; per-problem results to eval/<set>-step<k>.jsonl and the
set's figures (eval/<set>/mean@n, pass@k, maj@k, greedy) to the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import rewards
from rl.collect.generate import tool_spec
from rl.config import Config, RewardConfig
from rl.data.prompts import PromptSet
from rl.eval.metrics import ProblemResult, figures_by_source
from rollout.types import RolloutGroup, Sampling, stable_seed


def vote_key(info: dict) -> str | None:
    """The answer a sample votes for in maj@k: the verifier's graded span, normalised as the math verifier
    compares it (exact numbers by value, so 0.5 and 1/2 vote together); None without an answer."""
    span = info.get("answer")
    if not isinstance(span, str) or not span.strip():
        return None
    from rewards.math import exact
    from rewards.math.normalize import normalize

    text = normalize(span).text
    try:
        return str(exact.evaluate(exact.parse(text)))
    except (exact.NotExact, exact.TooLarge, RecursionError, ValueError, ZeroDivisionError):
        return text


def score_answers(groups: list[RolloutGroup], prompts: PromptSet, reward: RewardConfig) -> list[list[tuple]]:
    """Per group, per sample: (vote key, correct) by the accuracy verifier of the row's data source."""
    rows = prompts.by_index()
    jobs = []
    for g in groups:
        row = rows[g.prompt_index]
        src = reward.source(row.data_source)
        term = next(t for t in src.terms if t.verifier == src.accuracy_verifier)
        jobs += [(term, row, c.text) for c in g.completions]
    results = rewards.score_batch([(t.verifier, text, row.answer, row.metadata) for t, row, text in jobs],
                                  workers=reward.workers, timeout_s=[t.timeout_s for t, _, _ in jobs])
    flat = [(vote_key(r.info), r.score >= 1.0) for r in results]
    out, i = [], 0
    for g in groups:
        out.append(flat[i : i + len(g.completions)])
        i += len(g.completions)
    return out


def evaluate_set(pool, prompts: PromptSet, cfg: Config) -> list[ProblemResult]:
    """n samples and (with eval.greedy) one greedy answer for every problem of the set, scored; with
    rollout.tools, the answers call the tool as in training."""
    e, r, tools = cfg.eval, cfg.rollout, tool_spec(cfg.rollout.tools)
    seed = stable_seed(r.seed, "eval") if r.request_seeds else None
    sampled = pool.generate(prompts.ids, prompts.indices(), Sampling(e.n, e.temperature, r.top_p, r.max_new_tokens,
                                                                     tuple(r.stop), seed, tools=tools))
    votes = score_answers(sampled, prompts, cfg.reward)
    greedy = [None] * len(sampled)
    if e.greedy:
        g = pool.generate(prompts.ids, prompts.indices(), Sampling(1, 0.0, 1.0, r.max_new_tokens, tuple(r.stop),
                                                                   tools=tools))
        greedy = [v[0] for v in score_answers(g, prompts, cfg.reward)]
    rows = prompts.by_index()
    return [ProblemResult(grp.prompt_index, rows[grp.prompt_index].data_source, [k for k, _ in v], [ok for _, ok in v],
                          *(gr if gr is not None else (None, None)))
            for grp, v, gr in zip(sampled, votes, greedy)]


def write_results(path: Path, results: list[ProblemResult]) -> None:
    """One line per problem: its index, source, n, c, the answers and their verdicts, and the greedy answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in results:
            f.write(json.dumps({"index": r.index, "data_source": r.data_source, "n": r.n, "c": r.c, "answers": r.keys,
                                "correct": r.correct, "greedy_answer": r.greedy_key,
                                "greedy_correct": r.greedy_correct}) + "\n")


def run_evals(pool, eval_sets: dict[str, PromptSet], cfg: Config, step: int, run_dir: Path | None) -> dict[str, float]:
    """Every eval set at the engines' current weights: `eval/<set>/<figure>` metrics, and (with a run_dir) the
    per-problem files eval/<set>-step<step>.jsonl."""
    out = {}
    for name, prompts in eval_sets.items():
        results = evaluate_set(pool, prompts, cfg)
        if run_dir is not None:
            write_results(Path(run_dir) / "eval" / f"{name}-step{step}.jsonl", results)
        out |= {f"eval/{name}/{k}": v for k, v in figures_by_source(results, cfg.eval.k).items()}
    return out
