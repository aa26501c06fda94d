"""Two example verifiers: `exact_answer` (case-insensitive text in the last <answer> block) and the
`max_words` factory, whose product `short_answer` rewards answers of at most 5 words."""

from __future__ import annotations

from dataclasses import dataclass

from rewards import Reward


def _answer_block(response: str) -> str | None:
    close = response.rfind("</answer>")
    start = response.rfind("<answer>", 0, close) if close != -1 else -1
    return None if start == -1 else response[start + len("<answer>") : close].strip()


def exact_answer(response: str, reference, **metadata) -> Reward:
    """1 if the last <answer> block equals `reference` (a string or a list of accepted strings), ignoring case."""
    if isinstance(reference, str):
        accepted = [reference]
    elif isinstance(reference, list) and reference and all(isinstance(r, str) for r in reference):
        accepted = reference
    else:
        # A bad reference is the dataset's fault: status "error" masks the sample instead of scoring it 0.
        return Reward.fail("error", reason=f"reference must be a string or a list of strings, got {reference!r}")
    answer = _answer_block(response)
    if not answer:
        return Reward.fail("no_answer")
    if answer.casefold() in {a.strip().casefold() for a in accepted}:
        return Reward.ok(answer=answer)
    return Reward.wrong(answer=answer)


exact_answer.timeout_s = 2.0  # score_batch's hard limit for this verifier unless the caller sets one


@dataclass(frozen=True)
class MaxWords:
    """Score 1 when the <answer> block has at most `limit` words. A factory product: its name shows the limit."""

    limit: int
    timeout_s: float = 2.0

    @property
    def name(self) -> str:
        return f"max_words({self.limit})"

    def __call__(self, response: str, reference=None, **metadata) -> Reward:
        answer = _answer_block(response)
        if answer is None:
            return Reward.fail("no_answer")
        words = len(answer.split())
        return Reward.ok(words=words) if words <= self.limit else Reward.wrong(words=words)


def max_words(limit: int) -> MaxWords:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return MaxWords(limit)


short_answer = max_words(5)
