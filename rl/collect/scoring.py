"""Scores rollout groups with the configured verifiers and combines them into one reward per sample."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import rewards
from rl.config import RewardConfig
from rl.data import PromptRow
from rollout.types import RolloutGroup


@dataclass(frozen=True)
class ScoredGroups:
    """Rewards of P groups of G samples."""

    total: torch.Tensor  # (P, G) weighted sum over terms
    valid: torch.Tensor  # (P, G) bool; False where a verifier failed for infrastructure reasons
    terms: dict[str, torch.Tensor]  # verifier -> (P, G) score
    statuses: dict[str, list[str]]  # verifier -> P*G statuses, group-major

    def take(self, rows: list[int]) -> ScoredGroups:
        """The groups at `rows`, in that order."""
        G = self.total.shape[1]
        statuses = {k: [v[r * G + j] for r in rows for j in range(G)] for k, v in self.statuses.items()}
        return ScoredGroups(self.total[rows], self.valid[rows], {k: v[rows] for k, v in self.terms.items()}, statuses)

    def has_signal(self) -> torch.Tensor:
        """(P,) bool: the groups that carry a learning signal, i.e. at least 2 valid samples whose rewards are not
        all equal. The others get zero advantage everywhere (DAPO's dynamic sampling drops them, arXiv:2503.14476)."""
        valid = self.valid.bool()
        r_max = torch.where(valid, self.total, torch.full_like(self.total, -torch.inf)).amax(dim=-1)  # (P,)
        r_min = torch.where(valid, self.total, torch.full_like(self.total, torch.inf)).amin(dim=-1)  # (P,)
        return (valid.sum(dim=-1) >= 2) & (r_max > r_min)


def cat_scored(parts: list[ScoredGroups]) -> ScoredGroups:
    """Groups of several scoring rounds, one after another."""
    return ScoredGroups(
        torch.cat([p.total for p in parts]),
        torch.cat([p.valid for p in parts]),
        {k: torch.cat([p.terms[k] for p in parts]) for k in parts[0].terms},
        {k: [x for p in parts for x in p.statuses[k]] for k in parts[0].statuses},
    )


def score_groups(groups: list[RolloutGroup], rows: dict[int, PromptRow], cfg: RewardConfig) -> ScoredGroups:
    """All (term, sample) items go to the reward pool at once; an `error` status masks the sample.

    A `timeout` is the response's own doing (e.g. an expression too large to compare), so it scores 0
    and stays in the batch; both are counted in the metrics.
    """
    P, G = len(groups), len(groups[0].completions)
    samples = [(rows[g.prompt_index], c.text) for g in groups for c in g.completions]
    items = [(t.verifier, text, row.answer, row.metadata) for t in cfg.terms for row, text in samples]
    limits = [t.timeout_s for t in cfg.terms for _ in samples]
    results = rewards.score_batch(items, workers=cfg.workers, timeout_s=limits)
    total = torch.zeros(P * G)
    valid = torch.ones(P * G, dtype=torch.bool)
    terms, statuses = {}, {}
    for k, term in enumerate(cfg.terms):
        chunk = results[k * P * G : (k + 1) * P * G]
        scores = torch.tensor([r.score for r in chunk], dtype=torch.float32)
        total += term.weight * scores
        valid &= torch.tensor([r.status != "error" for r in chunk])
        terms[term.verifier] = scores.view(P, G)
        statuses[term.verifier] = [r.status for r in chunk]
    return ScoredGroups(total.view(P, G), valid.view(P, G), terms, statuses)


def reward_metrics(scored: ScoredGroups, accuracy_verifier: str) -> dict[str, float]:
    """reward/mean over valid samples, reward/<verifier>/mean, reward/accuracy, status counts."""
    v = scored.valid
    out = {"reward/mean": float(scored.total[v].mean()) if v.any() else 0.0, "reward/masked": int((~v).sum()),
           # groups whose valid samples all scored the same give zero advantage, hence no gradient
           "reward/zero_std_frac": int((~scored.has_signal()).sum()) / max(len(v), 1)}
    for name, scores in scored.terms.items():
        out[f"reward/{name}/mean"] = float(scores[v].mean()) if v.any() else 0.0
        for status in ("timeout", "error"):
            out[f"reward/{name}/{status}"] = scored.statuses[name].count(status)
    if accuracy_verifier in scored.terms:
        out["reward/accuracy"] = float((scored.terms[accuracy_verifier][v] >= 1.0).float().mean()) if v.any() else 0.0
    if "format" in scored.terms:
        out["reward/format"] = out["reward/format/mean"]
    return out
