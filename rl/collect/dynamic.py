"""DAPO's dynamic sampling (arXiv:2503.14476, Sec. 3.2): drop the groups that carry no signal and sample more
prompts until the step has enough groups, or the round cap is hit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rl.collect.generate import Round
from rl.collect.scoring import ScoredGroups, cat_scored
from rollout.types import RolloutGroup


@dataclass(frozen=True)
class Picked:
    groups: list[RolloutGroup]
    scored: ScoredGroups
    dropped: list[int]  # dataset indices of the prompts whose groups were drawn but not trained on
    rounds: list[Round]  # every round generated, the first included


def keep_signal(first: Round, more: Callable[[int], Round], want: int, max_rounds: int) -> Picked:
    """Keeps the groups with a learning signal (ScoredGroups.has_signal) from `first` and from up to
    `max_rounds` further rounds of `more(n)`, until `want` are kept. If none carried signal, the step trains on
    the last round (zero advantages) and its prompts do not count as dropped."""
    groups, scored, rounds = first.groups, first.scored, [first]
    kept_groups, kept_scores, dropped = [], [], []
    while True:
        rows = [i for i, k in enumerate(scored.has_signal().tolist()) if k][: want - len(kept_groups)]
        kept_groups += [groups[i] for i in rows]
        kept_scores.append(scored.take(rows))
        dropped += [g.prompt_index for i, g in enumerate(groups) if i not in rows]
        if len(kept_groups) >= want or len(rounds) > max_rounds:
            break
        rounds.append(more(want - len(kept_groups)))
        groups, scored = rounds[-1].groups, rounds[-1].scored
    if not kept_groups:
        trained = {g.prompt_index for g in groups}
        return Picked(groups, scored, [i for i in dropped if i not in trained], rounds)
    return Picked(kept_groups, cat_scored(kept_scores), dropped, rounds)
