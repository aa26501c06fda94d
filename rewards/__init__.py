"""Rule-based rewards: verifiers (math, code, format, reasoning_gym), their registry, and `score_batch`, the
hard-limited pool."""

# Importing the built-in verifiers registers "math", "code" and "format" before anyone else can take the names.
from rewards import code, math, procedural  # noqa: F401
from rewards.format import FormatVerifier, format_reward
from rewards.pool import close_pool, score_batch
from rewards.registry import (
    ENTRY_POINT_GROUP,
    UnknownVerifierError,
    get_verifier,
    list_verifiers,
    register_verifier,
    register_verifier_factory,
    verifier_name,
)
from rewards.types import STATUSES, Reward

__all__ = [
    "ENTRY_POINT_GROUP",
    "STATUSES",
    "FormatVerifier",
    "Reward",
    "UnknownVerifierError",
    "close_pool",
    "format_reward",
    "get_verifier",
    "list_verifiers",
    "register_verifier",
    "register_verifier_factory",
    "score_batch",
    "verifier_name",
]
