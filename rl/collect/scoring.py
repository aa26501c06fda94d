"""Scores rollout groups with the configured verifiers and combines them into one reward per sample."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import rewards
from rl.collect import failures
from rl.config import RewardConfig
from rl.data import PromptRow
from rollout.types import RolloutGroup


@dataclass(frozen=True)
class ScoredGroups:
    """Rewards of P groups of G samples. Each row is scored by its data source's terms (reward.sources)."""

    total: torch.Tensor  # (P, G) weighted sum over the row's terms
    valid: torch.Tensor  # (P, G) bool; False where a verifier failed for infrastructure reasons
    terms: dict[str, torch.Tensor]  # verifier -> (P, G) score (0 where it does not score the row)
    statuses: dict[str, list[str]]  # verifier -> P*G statuses, group-major ("" where it does not score the row)
    correct: torch.Tensor | None = None  # (P, G) bool: full score from the row's accuracy verifier
    sources: list[str] | None = None  # (P,) each group's data source

    def take(self, rows: list[int]) -> ScoredGroups:
        """The groups at `rows`, in that order."""
        G = self.total.shape[1]
        statuses = {k: [v[r * G + j] for r in rows for j in range(G)] for k, v in self.statuses.items()}
        return ScoredGroups(self.total[rows], self.valid[rows], {k: v[rows] for k, v in self.terms.items()}, statuses,
                            None if self.correct is None else self.correct[rows],
                            None if self.sources is None else [self.sources[r] for r in rows])

    def applies(self, verifier: str) -> torch.Tensor:
        """(P, G) bool: the samples `verifier` scored."""
        return torch.tensor([x != "" for x in self.statuses[verifier]]).view_as(self.total)

    def has_signal(self) -> torch.Tensor:
        """(P,) bool: the groups that carry a learning signal, i.e. at least 2 valid samples whose rewards are not
        all equal. The others get zero advantage everywhere (DAPO's dynamic sampling drops them, arXiv:2503.14476)."""
        valid = self.valid.bool()
        r_max = torch.where(valid, self.total, torch.full_like(self.total, -torch.inf)).amax(dim=-1)  # (P,)
        r_min = torch.where(valid, self.total, torch.full_like(self.total, torch.inf)).amin(dim=-1)  # (P,)
        return (valid.sum(dim=-1) >= 2) & (r_max > r_min)


def cat_scored(parts: list[ScoredGroups]) -> ScoredGroups:
    """Groups of several scoring rounds, one after another."""
    names = list(dict.fromkeys(k for p in parts for k in p.terms))
    def term(p, k):
        return p.terms[k] if k in p.terms else torch.zeros_like(p.total)
    def status(p, k):
        return p.statuses[k] if k in p.statuses else [""] * p.total.numel()
    return ScoredGroups(
        torch.cat([p.total for p in parts]),
        torch.cat([p.valid for p in parts]),
        {k: torch.cat([term(p, k) for p in parts]) for k in names},
        {k: [x for p in parts for x in status(p, k)] for k in names},
        torch.cat([p.correct for p in parts]) if all(p.correct is not None for p in parts) else None,
        [x for p in parts for x in p.sources] if all(p.sources is not None for p in parts) else None,
    )


def score_groups(groups: list[RolloutGroup], rows: dict[int, PromptRow], cfg: RewardConfig) -> ScoredGroups:
    """All (term, sample) items go to the reward pool at once, each sample scored by its row's source's terms;
    an `error` status masks the sample.

    A `timeout` is the response's own doing (e.g. an expression too large to compare), so it scores 0
    and stays in the batch; both are counted in the metrics.
    """
    P, G = len(groups), len(groups[0].completions)
    samples = [(rows[g.prompt_index], c.text) for g in groups for c in g.completions]
    sources = [cfg.source(row.data_source) for row, _ in samples]
    jobs = [(i, t) for i, src in enumerate(sources) for t in src.terms]  # sample-major: a row's terms together
    results = rewards.score_batch([(t.verifier, samples[i][1], samples[i][0].answer, samples[i][0].metadata)
                                   for i, t in jobs], workers=cfg.workers, timeout_s=[t.timeout_s for _, t in jobs])
    names = list(dict.fromkeys(t.verifier for _, t in jobs))
    total, valid = torch.zeros(P * G), torch.ones(P * G, dtype=torch.bool)
    scores = {n: torch.zeros(P * G) for n in names}
    statuses = {n: [""] * (P * G) for n in names}
    for (i, t), r in zip(jobs, results):
        total[i] += t.weight * r.score
        valid[i] &= r.status != "error"
        if r.status == "error":
            failures.WATCH.note(t.verifier, samples[i][0].index, str(r.info.get("reason", "")),
                                str(r.info.get("traceback", "")))
        scores[t.verifier][i], statuses[t.verifier][i] = r.score, r.status
    correct = torch.tensor([bool(scores[src.accuracy_verifier][i] >= 1.0) for i, src in enumerate(sources)])
    return ScoredGroups(total.view(P, G), valid.view(P, G), {n: v.view(P, G) for n, v in scores.items()}, statuses,
                        correct.view(P, G), [rows[g.prompt_index].data_source for g in groups])


def reward_metrics(scored: ScoredGroups, accuracy_verifier: str) -> dict[str, float]:
    """reward/mean over valid samples, reward/<verifier>/mean over the samples it scored, reward/accuracy,
    status counts, and with several data sources reward/<source>/total and reward/<source>/accuracy."""
    v = scored.valid
    out = {"reward/mean": float(scored.total[v].mean()) if v.any() else 0.0, "reward/masked": int((~v).sum()),
           "reward/samples": v.numel(),
           # groups whose valid samples all scored the same give zero advantage, hence no gradient
           "reward/zero_std_frac": int((~scored.has_signal()).sum()) / max(len(v), 1)}
    for name, scores in scored.terms.items():
        mine = v & scored.applies(name)
        out[f"reward/{name}/mean"] = float(scores[mine].mean()) if mine.any() else 0.0
        for status in ("timeout", "error"):
            out[f"reward/{name}/{status}"] = scored.statuses[name].count(status)
    correct = scored.correct
    if correct is None and accuracy_verifier in scored.terms:
        correct = scored.terms[accuracy_verifier] >= 1.0
    if correct is not None:
        out["reward/accuracy"] = float(correct[v].float().mean()) if v.any() else 0.0
        out |= source_metrics(scored, correct)
    if "format" in scored.terms:
        out["reward/format"] = out["reward/format/mean"]
    return out


def source_metrics(scored: ScoredGroups, correct: torch.Tensor) -> dict[str, float]:
    """reward/<source>/total and reward/<source>/accuracy per data source, when a batch has more than one kind
    (or one that is not the default)."""
    names = sorted(set(scored.sources or []))
    if names in ([], ["default"]):
        return {}
    out = {}
    for name in names:
        rows = torch.tensor([s == name for s in scored.sources])[:, None] & scored.valid  # (P, G)
        out[f"reward/{name}/total"] = float(scored.total[rows].mean()) if rows.any() else 0.0
        out[f"reward/{name}/accuracy"] = float(correct[rows].float().mean()) if rows.any() else 0.0
    return out
