"""The eval figures as pure functions of per-problem results: unbiased pass@k (Chen et al. 2021, arXiv:2107.03374),
maj@k over the verifier-normalised answers, mean@n."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemResult:
    """One problem's n samples: each one's vote key (its normalised answer, None without one) and whether the
    verifier gave it full credit; and the greedy answer's, when there is one."""

    index: int
    data_source: str
    keys: list[str | None]
    correct: list[bool]
    greedy_key: str | None = None
    greedy_correct: bool | None = None

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def c(self) -> int:
        return sum(self.correct)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i): no huge binomials
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def maj_at_k(keys: list[str | None], correct: list[bool], k: int) -> float:
    """Majority vote over the first k samples' normalised answers: 1 if the most frequent answer is correct.
    Samples without an answer (None) do not vote. A tie gives the share of the tied answers that are correct
    (the expected score of breaking it at random); no vote at all gives 0."""
    votes = [(key, ok) for key, ok in zip(keys[:k], correct[:k]) if key is not None]
    if not votes:
        return 0.0
    counts = Counter(key for key, _ in votes)
    top = max(counts.values())
    winners = [key for key, m in counts.items() if m == top]
    right = {key for key, ok in votes if ok}
    return sum(key in right for key in winners) / len(winners)


def set_figures(results: list[ProblemResult], ks: list[int]) -> dict[str, float]:
    """mean@n, pass@k and maj@k for each k, and greedy accuracy (when the results have it), over the problems."""
    if not results:
        return {}
    n = results[0].n
    out = {f"mean@{n}": sum(r.c / r.n for r in results) / len(results)}
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(r.n, r.c, k) for r in results) / len(results)
        out[f"maj@{k}"] = sum(maj_at_k(r.keys, r.correct, k) for r in results) / len(results)
    if all(r.greedy_correct is not None for r in results):
        out["greedy"] = sum(r.greedy_correct for r in results) / len(results)
    return out


def figures_by_source(results: list[ProblemResult], ks: list[int]) -> dict[str, float]:
    """set_figures overall, and per data source (`<source>/pass@k`, ...) when the set mixes several."""
    out = set_figures(results, ks)
    sources = sorted({r.data_source for r in results})
    if len(sources) > 1:
        for s in sources:
            out |= {f"{s}/{k}": v for k, v in set_figures([r for r in results if r.data_source == s], ks).items()}
    return out
