"""The "reasoning_gym" verifier: a procedural task's own `score_answer` on the response's last <answer> block.

The row's metadata holds the task name and its generator entry (rl/data/procedural.py builds them)."""

from __future__ import annotations

from rewards.registry import register_verifier
from rewards.types import Reward


def answer_block(response: str) -> str | None:
    """The content of the last complete <answer>...</answer>, stripped; None if there is none."""
    close = response.rfind("</answer>")
    start = response.rfind("<answer>", 0, close) if close != -1 else -1
    return response[start + len("<answer>") : close].strip() if start != -1 else None


@register_verifier("reasoning_gym")
def reasoning_gym_verifier(response: str, reference, task: str | None = None, entry: dict | None = None,
                           **metadata) -> Reward:
    """Score of reasoning-gym's `score_answer(answer, entry)` for the row's task; 1.0 is "ok"."""
    if task is None or entry is None:
        return Reward.fail("error", reason="reasoning_gym needs the row's task and entry in its metadata")
    answer = answer_block(response)
    if not answer:
        return Reward.fail("no_answer")
    import reasoning_gym

    score = float(reasoning_gym.get_score_answer_fn(task)(answer=answer, entry=entry))
    score = min(max(score, 0.0), 1.0)
    return Reward.ok(score, answer=answer[:200]) if score >= 1.0 else Reward.wrong(score, answer=answer[:200])


reasoning_gym_verifier.timeout_s = 10.0
