"""Prompt templates: how a row's prompt (text or chat messages) becomes the text the engine continues.

`data.template` is a registered name (`r1_zero`, `chat`, `none`) or a string of the config's own holding
`{question}`. `chat` is the tokenizer's own chat template, with `data.system_prompt` when set.
"""

from __future__ import annotations

from collections.abc import Callable

from rl.errors import UserError
from rl.registry import Registry

# DeepSeek-R1-Zero's template (DeepSeek-AI 2025, Table 1). The prompt ends inside the think block,
# so a completion is "reasoning </think> <answer> x </answer>".
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and the answer is enclosed "
    "within <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {question} Assistant: <think>"
)

Prompt = str | list[dict[str, str]]
Template = Callable[[Prompt, object, str], str]  # (prompt, tokenizer, system prompt) -> text
TEMPLATES: Registry[Template] = Registry("template")


class TemplateError(UserError):
    """A template that cannot render this prompt (a chat template the tokenizer lacks, a bad format string)."""


def question_of(prompt: Prompt) -> str:
    """The question a text template wraps: the text itself, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


@TEMPLATES.register("r1_zero")
def r1_zero(prompt: Prompt, tokenizer, system_prompt: str) -> str:
    return R1_ZERO_TEMPLATE.format(question=question_of(prompt))


@TEMPLATES.register("none")
def bare(prompt: Prompt, tokenizer, system_prompt: str) -> str:
    return question_of(prompt)


@TEMPLATES.register("chat")
def chat(prompt: Prompt, tokenizer, system_prompt: str) -> str:
    """The tokenizer's own chat template over the messages (text becomes one user turn), ready to answer."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("data.template=chat: the model's tokenizer has no chat template; use r1_zero or a "
                            "template string with {question}")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_template(template: str) -> str | None:
    """An error message unless `template` is a registered name or a format string with `{question}`."""
    if template in TEMPLATES:
        return None
    if "{question}" not in template:
        return f"{template!r} is neither a template ({', '.join(TEMPLATES.names())}) nor a string with {{question}}"
    try:
        template.format(question="")
    except (IndexError, KeyError, ValueError) as e:
        return f"{template!r} is not a format string with only {{question}} ({type(e).__name__}: {e})"
    return None


def render(prompt: Prompt, template: str, tokenizer, system_prompt: str = "") -> str:
    """The text of `prompt` under `template` (a registered name, or a string with `{question}`)."""
    if template in TEMPLATES:
        return TEMPLATES.get(template)(prompt, tokenizer, system_prompt)
    return template.format(question=question_of(prompt))


def token_ids(text: str, template: str, tokenizer) -> list[int]:
    """Tokens of a rendered prompt; a chat template's text already holds its special tokens."""
    return tokenizer(text, add_special_tokens=template != "chat")["input_ids"]
