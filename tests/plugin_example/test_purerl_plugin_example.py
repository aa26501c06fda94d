"""How a reward author tests a verifier: labelled cases called directly, then through score_batch.

pytest puts this folder on sys.path, so `purerl_plugin_example` imports without installing it, and the
dotted path reaches the reward workers (they follow the trainer's sys.path)."""

import pytest
from purerl_plugin_example.verifiers import exact_answer, max_words, short_answer

from rewards import get_verifier, score_batch

EXACT = "purerl_plugin_example.verifiers:exact_answer"


@pytest.mark.parametrize(
    "response, reference, score, status",
    [
        ("<think>…</think><answer>Paris</answer>", "Paris", 1.0, "ok"),
        ("<answer> paris </answer>", "Paris", 1.0, "ok"),
        ("<answer>Lyon</answer>", "Paris", 0.0, "wrong"),
        ("<answer>Lyon</answer> then <answer>Paris</answer>", "Paris", 1.0, "ok"),
        ("<answer>NYC</answer>", ["New York", "NYC"], 1.0, "ok"),
        ("Paris", "Paris", 0.0, "no_answer"),
        ("<answer>  </answer>", "Paris", 0.0, "no_answer"),
        ("<answer>Paris</answer>", 42, 0.0, "error"),
    ],
)
def test_exact_answer_labelled(response, reference, score, status):
    r = exact_answer(response, reference)
    assert (r.score, r.status) == (score, status)


def test_max_words_factory():
    assert short_answer.name == "max_words(5)"
    assert short_answer("<answer>one two three</answer>").status == "ok"
    assert short_answer("<answer>a b c d e f</answer>").status == "wrong"
    assert max_words(1)("<answer>a b</answer>").score == 0.0
    with pytest.raises(ValueError):
        max_words(0)


def test_dotted_path_through_score_batch():
    assert get_verifier(EXACT) is exact_answer
    items = [
        (EXACT, "<answer>Paris</answer>", "Paris", {}),
        (EXACT, "<answer>Rome</answer>", "Paris", {}),
        (EXACT, "<answer>Paris</answer>", None, {}),
        (short_answer, "<answer>a b c d e f g</answer>", None, {}),  # a factory product is sent as an object
    ]
    out = score_batch(items, workers=2)
    assert [(r.score, r.status) for r in out] == [(1.0, "ok"), (0.0, "wrong"), (0.0, "error"), (0.0, "wrong")]
