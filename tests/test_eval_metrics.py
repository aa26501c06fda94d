"""The eval figures: unbiased pass@k (hand-worked and unbiased over subsamples), maj@k with ties, mean@n,
greedy, the split per data source, and the answers that vote together."""

import itertools
import random
from math import comb

import pytest

from rl.eval.metrics import ProblemResult, figures_by_source, maj_at_k, pass_at_k, set_figures
from rl.eval.run import vote_key


def test_pass_at_k_hand_worked():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 5) == 0.0  # nothing right: never
    assert pass_at_k(5, 5, 1) == 1.0 and pass_at_k(4, 4, 3) == 1.0  # everything right: always
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # the share right
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 wrong: every 4-subset holds a right one
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - comb(7, 5) / comb(10, 5))  # 1 - 21/252 = 0.916667
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("n,c,k", [(6, 2, 3), (8, 1, 4), (7, 5, 2), (5, 0, 2), (9, 4, 9)])
def test_pass_at_k_is_the_mean_over_every_k_subset(n, c, k):
    """Unbiased: the closed form equals the share of the C(n, k) subsets of the samples that hold a right one,
    and a random subsample estimates it."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    rng = random.Random(0)
    draws = [any(samples[i] for i in rng.sample(range(n), k)) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(exact, abs=0.02)


def test_maj_at_k_with_ties_and_missing_answers():
    keys, right = ["7", "8", "7", "8", None], [True, False, True, False, False]
    assert maj_at_k(keys, right, 1) == 1.0  # one vote, right
    assert maj_at_k(keys, right, 2) == 0.5  # 7 and 8 tie: half the tied answers are right
    assert maj_at_k(keys, right, 3) == 1.0  # 7 twice
    assert maj_at_k(keys, right, 5) == 0.5  # 2 against 2; the missing answer does not vote
    assert maj_at_k(["9", "9", "7"], [False, False, True], 3) == 0.0  # the majority is wrong
    assert maj_at_k([None, None], [False, False], 2) == 0.0  # no vote at all
    assert maj_at_k(["1", "2", "3"], [False, True, False], 3) == pytest.approx(1 / 3)  # a three-way tie


def test_set_figures_and_the_split_by_source():
    results = [ProblemResult(0, "a", ["1", "1", "2", "2"], [True, True, False, False], "1", True),
               ProblemResult(1, "b", ["5", "6", "6", "6"], [True, False, False, False], "6", False)]
    f = set_figures(results, [1, 2, 4])
    assert f["mean@4"] == pytest.approx((0.5 + 0.25) / 2)
    assert f["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert f["pass@2"] == pytest.approx(((1 - 1 / 6) + 0.5) / 2)  # 1 - C(2,2)/C(4,2); 1 - C(3,2)/C(4,2)
    assert f["pass@4"] == 1.0
    assert f["maj@4"] == pytest.approx((0.5 + 0.0) / 2)  # problem 0: a 2-2 tie; problem 1: 6 wins, wrong
    assert f["maj@1"] == 1.0 and f["greedy"] == 0.5  # each first sample is right; greedy: one of two
    split = figures_by_source(results, [1])
    assert split["a/pass@1"] == 0.5 and split["b/pass@1"] == 0.25 and split["pass@1"] == f["pass@1"]
    assert "a/pass@1" not in figures_by_source(results[:1], [1])  # one source: no split


def test_equal_answers_vote_together():
    assert vote_key({"answer": "0.5"}) == vote_key({"answer": "\\frac{1}{2}"}) == vote_key({"answer": "$1/2$"})
    assert vote_key({"answer": "x+1"}) == vote_key({"answer": " x+1 "}) != vote_key({"answer": "x+2"})
    assert vote_key({}) is None and vote_key({"answer": "  "}) is None
