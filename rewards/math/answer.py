"""Answer selection for math responses: which span of the text is graded (see docs/rewards.md)."""

from __future__ import annotations

import re
from typing import Literal

from rewards.math.extract import last_expression
from rewards.math.guards import brace_group
from rewards.math.normalize import unwrap

Untagged = Literal["expression", "boxed", "none"]
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE = re.compile(r"[^\s${}\\<]+")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer\s+is\s*[:=]?\s*([^\n]*)", re.IGNORECASE)
# The last resort: a number not glued to letters (`{3`, `>5`, but not the 2 of `AZYUK2A` or `x2`).
_NUMBER = re.compile(
    r"(?<![A-Za-z\d])(?:-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?(?:/\d+)?|-?\.\d+)(?![A-Za-z\d])"
)
# What may stand between two boxes of one answer list: spacing, punctuation, math delimiters, "and", "or", a
# \text{} holding one of those (`\text{ for part (a) and }`), a name being given (`y_2 =`).
_CONNECTOR = re.compile(
    r"(?:\s|[,;&$~]|\\\\|\\q?quad|\\[,;:! ()\[\]]|\band\b|\bor\b|[A-Za-z](?:_\{?\w+\}?)?\s*="
    r"|\\text\s*\{[^{}]{0,40}?(?:\band\b|\bor\b|,)[^{}]{0,40}\})*"
)
_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")
_MATH_MARKUP = re.compile(r"(?<!\\)\$|\\\(|\\\[")  # math delimiters; an escaped \$ is a dollar sign
MAX_BOXED_TRIED = 16  # bounds the work on texts full of unclosed \boxed{
MAX_BRACE_SCAN = 100_000  # a boxed argument longer than this is not an answer, it is an attack


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last complete boxes, last first: `\\boxed{...}`, `\\fbox{...}`, `\\boxed 5`.

    An unclosed `\\boxed{` is skipped; only the last MAX_BOXED_TRIED box commands are looked at."""
    found = []
    for m in reversed(list(_BOXED.finditer(text))[-MAX_BOXED_TRIED:]):
        if text.startswith("{", m.end()):
            group = brace_group(text, m.end(), MAX_BRACE_SCAN)
            if group is not None:
                found.append((m.start(), group[1], group[0]))
            continue
        tail = _BARE.match(text, m.end())
        if tail:
            found.append((m.start(), tail.end(), tail.group(0)))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last complete box (a MATH solution's answer), or None."""
    boxes = _boxes(text)
    return boxes[0][2] if boxes else None


def _joins_response(between: str) -> bool:
    """Two boxes of a response form one list only if connectors alone separate them."""
    return _CONNECTOR.fullmatch(between) is not None


def _joins_reference(between: str) -> bool:
    """Two boxes of a gold reference form one list as math-verify joins them: close, or a separator within 70
    characters (`\\boxed{1} papers and \\boxed{2} bins`). References are trusted; responses are not."""
    return len(between) < 10 or (len(between) < 70 and _SEPARATOR.search(between) is not None)


def _box_run(text: str, joins=_joins_response) -> tuple[str, int] | None:
    """(content, end) of the last box, joined with the boxes before it that `joins` links to it: `\\boxed{1},
    \\boxed{2}` gives "1, 2"; a box repeated next to itself counts once."""
    boxes = _boxes(text)
    if not boxes:
        return None
    start, end, content = boxes[0]
    parts = [content.strip()]
    for prev_start, prev_end, prev in boxes[1:]:
        if prev_end > start or not joins(text[prev_end:start]):
            break  # a box around this one (\boxed{\boxed{5}}), or prose between: the list ends here
        if prev.strip() != parts[-1]:
            parts.append(prev.strip())
        start = prev_start
    return ", ".join(reversed(parts)), end


def _strip_sentence_end(s: str) -> str:
    s = re.split(r"\.(?:\s|$)", s.strip())[0]  # keep the first sentence; "3.5" keeps its point
    s = re.sub(r"[.!]+$", "", s).strip()  # "The answer is 3.5." -> "3.5"
    return s.strip("$ ").strip()


def _answer_is(text: str) -> str | None:
    """x of the last "the answer is x", or None."""
    said = _ANSWER_IS.findall(text)
    if not said:
        return None
    return _strip_sentence_end(said[-1]) or None


def _boxed_or_said(text: str, joins=_joins_response) -> tuple[str, str] | None:
    """(span, method): the last boxes, unless "the answer is" comes after them with an expression
    (`\\boxed{255} ... The final answer is $10,455$`): the last answer stated counts; a remark such as "the
    answer is correct" does not replace a box. Without boxes, None."""
    run = _box_run(text, joins)
    if run is None:
        return None
    after = text[run[1] :]
    said = last_expression(after) if _ANSWER_IS.search(after) else None
    return (said, "answer_is") if said else (run[0], "boxed")


def _in_block(block: str) -> str:
    """The graded part of an <answer> block: its boxes, else "the answer is x", else, in a block of prose with
    inline math, the expression math-verify would extract, else the block's first sentence."""
    found = _boxed_or_said(block)
    span = found[0] if found is not None else _answer_is(block)
    if span is None and _MATH_MARKUP.search(block):
        span = last_expression(block)
    return span if span is not None else _strip_sentence_end(block)


def last_number(text: str) -> str | None:
    """The last number in `text` that is not part of a word."""
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the last match
        pass
    return last.group(0) if last is not None else None


def _free_text(response: str) -> tuple[str, str] | None:
    """(span, method) for text with no box: `#### x`, "the answer is x", the last expression, the last number."""
    hashes = _HASHES.findall(response)
    if hashes and _strip_sentence_end(hashes[-1]):
        return _strip_sentence_end(hashes[-1]), "hashes"
    said = _answer_is(response)
    if said:
        return said, "answer_is"
    # Text from an unclosed \boxed{ on was cut off: an expression there may be the start of a longer one.
    cut = response.rfind("\\boxed{")
    found = last_expression(response[:cut] if cut != -1 else response)
    if found:
        return found, "expression"
    if _MATH_MARKUP.search(response):
        return None  # it has math, and none of it parses: a number inside it (`$-[0,1)$`) is no answer
    number = last_number(response)  # math-verify's anchors miss `>5` in `</answer><answer>5`, or `{3`
    return (number, "number") if number is not None else None


def _untagged(response: str, untagged: Untagged) -> tuple[str, str] | None:
    """(span, method) for a response without an <answer> block, under the `untagged` policy."""
    if untagged == "none":
        return None
    if untagged == "boxed":
        run = _box_run(response)
        found = (run[0], "boxed") if run is not None else None
    else:
        found = _boxed_or_said(response)
        if found is None:
            return _free_text(response)
    return found if found is not None and found[0] else None


def select_answer(response: str, untagged: Untagged = "expression") -> tuple[str, str] | None:
    """(span, method) for the graded part of `response`, or None if there is nothing to grade.

    The last <answer>...</answer> block, if any; otherwise, by `untagged`: "expression" (the last boxes, `#### x`,
    "the answer is x", the last expression, the last number), "boxed" (the last boxes only) or "none".
    """
    # rfind, not a regex: a lazy <answer>(.*?)</answer> is quadratic on texts full of "<answer>"
    close = response.rfind("</answer>")
    open_ = response.rfind("<answer>", 0, close) if close != -1 else -1
    if open_ != -1:
        span = _in_block(response[open_ + len("<answer>") : close]).strip()
        return (span, "answer_tag") if span else None
    return _untagged(response, untagged)


def reference_span(reference: str) -> str:
    """The answer in a gold reference: its boxes (joined as math-verify joins them) if it has any, its last
    expression if it is prose with inline math (a MATH solution), else all of it."""
    found = _boxed_or_said(reference, _joins_reference)
    if found is not None and found[0]:
        return found[0]
    if _MATH_MARKUP.search(unwrap(reference)):
        return last_expression(reference) or reference
    return reference
