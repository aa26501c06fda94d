"""The "code" verifier (stub while the sandbox is built)."""

from rewards.registry import register_verifier
from rewards.types import Reward


@register_verifier("code")
def code_verifier(response: str, reference, **metadata) -> Reward:
    return Reward.fail("error", reason="code verifier not implemented yet")
