"""The "format" verifier: the R1 template, with the prompt ending in "<think>" (default) or not."""

import pytest

from rewards import format_reward, get_verifier

FMT = get_verifier("format")


@pytest.mark.parametrize(
    "response, think_open, score, status",
    [
        ("reasoning</think> <answer>5</answer>", True, 1.0, "ok"),
        ("reasoning</think>\n<answer>5</answer>\n  ", True, 1.0, "ok"),
        ("<think>reasoning</think><answer>5</answer>", False, 1.0, "ok"),
        ("<think>reasoning</think><answer>5</answer>", True, 0.0, "wrong"),  # think opened twice
        ("reasoning</think><answer>5</answer>", False, 0.0, "wrong"),  # no opening tag
        ("reasoning</think><answer>5</answer> extra", True, 0.0, "wrong"),
        ("reasoning</think>text<answer>5</answer>", True, 0.0, "wrong"),
        ("reasoning</think><answer>5</answer><answer>6</answer>", True, 0.0, "wrong"),
        ("a</think>b</think><answer>5</answer>", True, 0.0, "wrong"),
        ("reasoning</think><answer>  </answer>", True, 0.0, "wrong"),
        ("reasoning</think><answer>5", True, 0.0, "wrong"),
        ("<answer>5</answer></think>", True, 0.0, "wrong"),
        ("", True, 0.0, "no_answer"),
    ],
)
def test_template(response, think_open, score, status):
    r = FMT(response, None, prompt_has_think_open=think_open)
    assert (r.score, r.status) == (score, status)


def test_partial_credit_factory():
    lenient = format_reward(partial_credit=0.5)
    assert lenient("reasoning</think> chatter <answer>5</answer>", None).score == 0.5
    assert lenient("no tags at all", None).score == 0.0
    assert lenient("reasoning</think><answer>5</answer>", None).score == 1.0
    assert FMT.name == "format" and "partial_credit=0.5" in lenient.name
    with pytest.raises(ValueError):
        format_reward(partial_credit=1.5)


def test_factory_default_without_think_open():
    fmt = format_reward(prompt_has_think_open=False)
    assert fmt("<think>r</think><answer>1</answer>", None).status == "ok"
    assert fmt("<think>r</think><answer>1</answer>", None, prompt_has_think_open=True).status == "wrong"
