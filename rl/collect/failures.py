"""Verifier failures made loud. A sample whose verifier fails (`error`: it raised, returned no Reward, or its
sandbox could not start) is masked, not scored; here the first failure of each kind is said on the console, every
one's traceback goes to <run dir>/logs/rewards.log with its prompt, and a run whose masked share stays above
reward.max_error_rate for reward.max_error_steps steps in a row stops (the loop checkpoints first)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rl.errors import UserError
from rl.run.console import say


class RewardFailure(UserError):
    """Too many samples masked for too long: the message names the verifier and its most frequent error."""


class FailureWatch:
    def __init__(self, log: Path | None = None, max_rate: float = 0.5, max_steps: int = 3):
        self.log, self.max_rate, self.max_steps = log, max_rate, max_steps
        self.said: set[tuple[str, str]] = set()
        self.step: Counter[tuple[str, str]] = Counter()  # this step's failures, by (verifier, reason)
        self.bad_steps = 0  # consecutive steps above max_rate

    def note(self, verifier: str, prompt_index: int, reason: str, traceback: str = "") -> None:
        """One sample's failure: said once per verifier and reason; logged always."""
        key = (verifier, reason)
        self.step[key] += 1
        if key not in self.said:
            self.said.add(key)
            where = f" (traceback: {self.log})" if self.log else ""
            say(f"reward: verifier {verifier!r} failed on prompt {prompt_index}: {reason}; the sample is masked{where}")
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("a") as f:
                f.write(f"--- verifier {verifier!r}, prompt {prompt_index}: {reason}\n{traceback or '(no traceback)'}\n")

    def end_step(self, masked: int, total: int) -> None:
        """After a step scored `total` samples, `masked` of them masked: RewardFailure once the share has been above
        max_rate for max_steps steps in a row."""
        failures, self.step = self.step, Counter()
        self.bad_steps = self.bad_steps + 1 if total and masked / total > self.max_rate else 0
        if self.bad_steps < self.max_steps:
            return
        (verifier, reason), count = failures.most_common(1)[0] if failures else (("?", "?"), 0)
        raise RewardFailure(f"{self.bad_steps} steps in a row masked more than {self.max_rate:.0%} of the samples "
                            f"(reward.max_error_rate, reward.max_error_steps; this step {masked} of {total}); the "
                            f"most frequent failure: verifier {verifier!r}, {count} samples: {reason}")


WATCH = FailureWatch()


def watch(log: Path | None, max_rate: float, max_steps: int) -> FailureWatch:
    """A run's watch, from its start: failures said anew, logged to `log`."""
    global WATCH
    WATCH = FailureWatch(log, max_rate, max_steps)
    return WATCH
