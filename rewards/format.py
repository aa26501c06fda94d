"""The "format" verifier: the R1 template `<think>...</think><answer>...</answer>` and nothing after it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rewards.registry import register_verifier, register_verifier_factory
from rewards.types import Reward

_TEMPLATE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@dataclass(frozen=True)
class FormatVerifier:
    """Checks the R1 template.

    prompt_has_think_open: the prompt already ends with "<think>" (our prompts do), so the response
        starts inside the think block and must not open it again. Metadata of the same name overrides it.
    partial_credit: score given when the response has exactly one non-empty <answer>...</answer> block
        but the full template is not met (status "wrong"); 0 disables partial credit.
    """

    prompt_has_think_open: bool = True
    partial_credit: float = 0.0
    timeout_s: float = 5.0

    @property
    def name(self) -> str:
        if (self.prompt_has_think_open, self.partial_credit) == (True, 0.0):
            return "format"
        return f"format(prompt_has_think_open={self.prompt_has_think_open}, partial_credit={self.partial_credit})"

    def __call__(self, response: str, reference=None, **metadata) -> Reward:
        if not response.strip():
            return Reward.fail("no_answer")
        think_open = metadata.get("prompt_has_think_open", self.prompt_has_think_open)
        text = "<think>" + response if think_open else response
        counts = {tag: text.count(tag) for tag in _TAGS}
        m = _TEMPLATE.fullmatch(text)
        if m and all(c == 1 for c in counts.values()) and m.group(2).strip():
            return Reward.ok()
        has_answer = counts["<answer>"] == counts["</answer>"] == 1 and re.search(
            r"<answer>\s*\S.*?</answer>", text, re.DOTALL
        )
        if self.partial_credit and has_answer:
            return Reward.wrong(self.partial_credit, reason="partial", tag_counts=counts)
        return Reward.wrong(reason="malformed", tag_counts=counts)


@register_verifier_factory("format")
def format_reward(prompt_has_think_open: bool = True, partial_credit: float = 0.0) -> FormatVerifier:
    """Factory for a parameterised format verifier; its `.name` shows the parameters. In a config:
    `verifier: "format(partial_credit=0.2)"`."""
    if not 0.0 <= partial_credit < 1.0:
        raise ValueError(f"partial_credit must be in [0, 1), got {partial_credit}")
    return FormatVerifier(prompt_has_think_open, partial_credit)


register_verifier("format")(FormatVerifier())
