"""Which rows each trainer rank scores in which micro-batch: one plan for the reference, old-logprob and
training passes.

Rows go to ranks by tokens (the longest first, each to the rank with the fewest tokens so far), then each rank's
rows form micro-batches: `rows` at a time, in order, or, under a token budget, first-fit decreasing into bins of at
most `max_tokens` tokens counted as the forward lays them out padded, rows x the bin's longest row (a longer sequence
gets a bin of its own). Counting padding keeps long answers alone and groups rows of similar length: a lone row
needs no attention mask (the causal kernel), where rows of mixed lengths packed or padded together make attention
dense over the longest (on the long-tailed batch of tests/test_micro.py, counting real tokens and packing took
2.4 times as long).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MicroBatching:
    """trainer.micro_batch_size and trainer.max_tokens_per_micro_batch."""

    rows: int = 32  # rows per micro-batch when max_tokens is 0
    max_tokens: int = 0  # the token budget of a micro-batch; 0: micro-batches of `rows` rows

    def batches(self, lengths: list[int], rows: list[int] | None = None) -> list[list[int]]:
        """Micro-batches of `rows` (default: all), each a list of row indices in ascending order."""
        rows = list(range(len(lengths))) if rows is None else rows
        if self.max_tokens == 0:
            return [rows[i : i + self.rows] for i in range(0, len(rows), self.rows)]
        return first_fit_decreasing(rows, lengths, self.max_tokens)


def first_fit_decreasing(rows: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Rows into bins of at most `budget` padded tokens (rows x the longest), longest first, each into the first
    bin it fits; a row longer than the budget takes a bin alone."""
    bins: list[list[int]] = []
    for r in sorted(rows, key=lambda r: (-lengths[r], r)):
        # sorted: a bin's first row is its longest, so one more row costs that width
        fit = next((b for b in bins if (len(b) + 1) * lengths[b[0]] <= budget), None)
        if fit is None:
            bins.append([r])
        else:
            fit.append(r)
    return [sorted(b) for b in bins]


def split_by_tokens(lengths: list[int], ranks: int) -> list[list[int]]:
    """Rows per rank with about equal tokens: the longest row first, each to the rank holding the fewest tokens
    (ties: the lower rank); each rank's rows in ascending order."""
    held = [0] * ranks
    parts: list[list[int]] = [[] for _ in range(ranks)]
    for r in sorted(range(len(lengths)), key=lambda r: (-lengths[r], r)):
        k = min(range(ranks), key=lambda k: (held[k], k))
        parts[k].append(r)
        held[k] += lengths[r]
    return [sorted(p) for p in parts]


@dataclass(frozen=True)
class RankPlan:
    """Every rank's micro-batches of one pass over a batch; every rank computes the same plan."""

    batches: list[list[list[int]]]  # per rank, its micro-batches (row indices)
    tokens: list[int]  # per rank, the tokens it scores

    def rows(self) -> list[list[int]]:
        """Per rank, the rows it scores, ascending."""
        return [sorted(r for b in batches for r in b) for batches in self.batches]

    @property
    def passes(self) -> int:
        """Micro-batches of the busiest rank: what every rank runs under FSDP (the others add empty passes)."""
        return max(len(b) for b in self.batches)

    @property
    def token_imbalance(self) -> float:
        """The busiest rank's tokens over the mean (1.0: balanced)."""
        mean = sum(self.tokens) / len(self.tokens)
        return max(self.tokens) / mean if mean else 1.0


def plan_ranks(lengths: list[int], ranks: int, micro: MicroBatching) -> RankPlan:
    """The rows of a batch (their token lengths) over `ranks` ranks, then into each rank's micro-batches."""
    parts = split_by_tokens(lengths, ranks) if ranks > 1 else [list(range(len(lengths)))]
    return RankPlan([micro.batches(lengths, p) for p in parts], [sum(lengths[r] for r in p) for p in parts])
