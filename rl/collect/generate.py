"""Sampling settings from the config, and one generate-then-score round on the rollout pool."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from rl.collect.scoring import ScoredGroups, score_groups
from rl.config import RewardConfig, RolloutConfig, ToolsConfig
from rl.data.prompts import PromptSet
from rollout.types import RolloutGroup, Sampling, ToolSpec, stable_seed


def sampling(rollout: RolloutConfig, n: int, *key) -> Sampling:
    """The run's sampling settings with `n` samples per prompt (rollout.n for training, 1 for a single answer).
    With rollout.request_seeds and a `key` (which call of the run this is: a step and a round, or "eval"), the
    requests are seeded from (rollout.seed, key): the same call draws the same samples from the same weights."""
    seed = stable_seed(rollout.seed, *key) if rollout.request_seeds and key else None
    return Sampling(n=n, temperature=rollout.temperature, top_p=rollout.top_p, max_new_tokens=rollout.max_new_tokens,
                    stop=tuple(rollout.stop), seed=seed, min_new_tokens=rollout.min_new_tokens,
                    tools=tool_spec(rollout.tools))


def tool_spec(tools: ToolsConfig) -> ToolSpec | None:
    """What the engines need of rollout.tools; None when off."""
    wanted = {f.name for f in dataclasses.fields(ToolSpec)}
    return ToolSpec(**{k: v for k, v in dataclasses.asdict(tools).items() if k in wanted}) if tools.name else None


def tool_metrics(groups: list[RolloutGroup], drop_void_turns: bool) -> dict[str, float]:
    """rollout.tools: how the step's answers used the tool (tokens: written by the tool, against all);
    tools/void_dropped: the answers the void-turn filter masked (in reward/masked too, but no verifier's failure)."""
    answers = [c for g in groups for c in g.completions]
    calls = [status for c in answers for status in c.tool_calls]
    tool_tokens = sum(len(c.token_ids) - c.generated for c in answers)
    seconds = torch.tensor([s for c in answers for s in c.tool_seconds] or [0.0])
    return {"tools/latency_p50_s": float(seconds.quantile(0.5)), "tools/latency_p99_s": float(seconds.quantile(0.99)),
            "tools/engine_idle_s": sum(g.engine_idle_s for g in groups),
            "tools/calls_per_answer": len(calls) / max(len(answers), 1),
            "tools/call_rate": sum(bool(c.tool_calls) for c in answers) / max(len(answers), 1),
            "tools/success_rate": calls.count("ok") / max(len(calls), 1),
            "tools/timeout_rate": calls.count("timeout") / max(len(calls), 1),
            "tools/void_rate": sum(c.void_turn for c in answers) / max(len(answers), 1),
            "tools/void_dropped": sum(c.void_turn for c in answers) if drop_void_turns else 0,
            "tools/tokens": tool_tokens,
            "tools/token_share": tool_tokens / max(sum(len(c.token_ids) for c in answers), 1)}




def reflection_rate(groups: list[RolloutGroup], markers: list[str]) -> float:
    """The share of the step's responses that hold any of `markers` (log.reflection_markers): responses that check
    a candidate and revise it."""
    texts = [c.text for g in groups for c in g.completions]
    return sum(any(m in t for m in markers) for t in texts) / max(len(texts), 1)


class StaleWeightsError(RuntimeError):
    """Groups were sampled with other weights than the trainer expects: an engine missed a sync."""


def check_versions(groups: list[RolloutGroup], expected: int, staleness: int) -> None:
    """Refuses groups sampled with any weight version but `expected` (the trainer's step minus one, minus the
    round's `staleness`): the guard against training on an engine's stale weights, on every step."""
    for g in groups:
        if g.weight_version != expected:
            raise StaleWeightsError(
                f"engine {g.engine} sampled prompt {g.prompt_index} with weight version {g.weight_version}, but the "
                f"trainer expects version {expected} ({staleness} step(s) stale): that engine missed a weight sync")


@dataclass(frozen=True)
class Round:
    """One generation round: the groups of some prompts, their rewards, and what each half took."""

    groups: list[RolloutGroup]
    scored: ScoredGroups
    generate_s: float
    reward_s: float


def score_round(groups: list[RolloutGroup], prompts: PromptSet, reward: RewardConfig, generate_s: float) -> Round:
    t = time.perf_counter()
    scored = score_groups(groups, prompts.by_index(), reward)
    return Round(groups, scored, generate_s, time.perf_counter() - t)


def drop_void_turns(r: Round) -> Round:
    """SimpleTIR's filter (rollout.tools.drop_void_turns): an answer with a void turn (it asked for a call's output
    with no closed code block before) is masked out of the step, like a sample whose verifier failed."""
    void = torch.tensor([[c.void_turn for c in g.completions] for g in r.groups], dtype=torch.bool)
    if not void.any():
        return r
    return dataclasses.replace(r, scored=dataclasses.replace(r.scored, valid=r.scored.valid & ~void.view_as(r.scored.valid)))


def generate_round(pool, prompts: PromptSet, sampling: Sampling, reward: RewardConfig) -> Round:
    """Generates a group for each of `prompts` and scores it."""
    t = time.perf_counter()
    groups = pool.generate(prompts.ids, prompts.indices(), sampling)
    return score_round(groups, prompts, reward, time.perf_counter() - t)
