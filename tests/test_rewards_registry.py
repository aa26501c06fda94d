"""Registry: built-ins, duplicate names, unknown names, the Reward record."""

import dataclasses

import pytest

import rewards
from rewards import Reward, get_verifier, register_verifier


def test_builtins_are_registered():
    for name in ["math", "code", "format"]:
        assert callable(get_verifier(name))


def test_duplicate_name_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("math")(lambda response, reference, **m: Reward.ok())


def test_unknown_name_lists_known():
    with pytest.raises(KeyError) as e:
        get_verifier("maths")
    assert "known: code, format, math" in str(e.value)
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch that
        get_verifier("maths")


def test_reward_validation():
    assert Reward.ok().score == 1.0
    with pytest.raises(ValueError):
        Reward(1.5, "ok")
    with pytest.raises(ValueError):
        Reward(0.0, "bogus")
    with pytest.raises(ValueError):
        Reward(1.0, "error")  # a failure never carries credit
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reward.ok().score = 0.0  # frozen


def test_public_names():
    for name in ["Reward", "register_verifier", "register_verifier_factory", "get_verifier", "score_batch", "close_pool"]:
        assert hasattr(rewards, name)


def test_factory_call_names_a_parameterised_verifier():
    lenient = get_verifier("format(partial_credit=0.25)")
    assert lenient is get_verifier("format(partial_credit=0.25)")  # made once
    assert lenient.name == "format(prompt_has_think_open=True, partial_credit=0.25)"
    r = lenient("reasoning</think> chatter <answer>5</answer>", None)
    assert (r.score, r.status) == (0.25, "wrong")
    assert get_verifier("format")("reasoning</think> chatter <answer>5</answer>", None).score == 0.0


@pytest.mark.parametrize(
    "spec, error",
    [
        ("format(0.25)", ValueError),  # keywords only
        ("format(partial_credit=__import__('os'))", ValueError),  # literals only, nothing is evaluated
        ("format(partial_credit=1.5)", ValueError),  # the factory's own check
        ("formats(partial_credit=0.5)", KeyError),
    ],
)
def test_bad_factory_calls(spec, error):
    with pytest.raises(error):
        get_verifier(spec)


def test_duplicate_factory_rejected():
    with pytest.raises(ValueError, match="already registered"):
        rewards.register_verifier_factory("format")(lambda **kw: None)
