"""The Reward record every verifier returns: a score in [0, 1], a status, and free-form info."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "wrong", "no_answer", "timeout", "error"]
STATUSES: tuple[str, ...] = ("ok", "wrong", "no_answer", "timeout", "error")


@dataclass(frozen=True)
class Reward:
    """Outcome of one verification.

    `status` says why the score is what it is: "ok" (correct / passed), "wrong", "no_answer" (nothing
    to grade was found), "timeout" (the hard time limit killed it), "error" (infrastructure or bad
    reference: the trainer should mask the sample, not treat it as a 0).
    """

    score: float
    status: Status
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score!r}")
        if self.status in ("no_answer", "timeout", "error") and self.score != 0.0:
            raise ValueError(f"status {self.status!r} must carry score 0, got {self.score!r}")

    @classmethod
    def ok(cls, score: float = 1.0, **info: Any) -> Reward:
        return cls(float(score), "ok", info)

    @classmethod
    def wrong(cls, score: float = 0.0, **info: Any) -> Reward:
        return cls(float(score), "wrong", info)

    @classmethod
    def fail(cls, status: Status, **info: Any) -> Reward:
        """A zero-score reward with a non-graded status (no_answer, timeout, error)."""
        return cls(0.0, status, info)
