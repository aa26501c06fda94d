"""Answer selection for math responses: which span of the text is graded (see docs/rewards.md)."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE = re.compile(r"[^\s${}\\<]+")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer\s+is\s*[:=]?\s*([^\n]*)", re.IGNORECASE)
# A number with optional thousands separators, decimals, e-notation, or a plain a/b fraction.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?(?:/\d+)?|-?\.\d+")
MAX_BOXED_TRIED = 16  # bounds the work on texts full of unclosed \boxed{
MAX_BRACE_SCAN = 100_000  # a boxed argument longer than this is not an answer, it is an attack


def _brace_group(text: str, start: int) -> tuple[str, int] | None:
    """Content of the {...} group opening at text[start], nested braces handled; None if unclosed."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    end = min(len(text), start + MAX_BRACE_SCAN)
    i = start
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2  # an escaped brace \{ does not open or close a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (or \\fbox{...}, or `\\boxed 5`)."""
    for m in reversed(list(_BOXED.finditer(text))[-MAX_BOXED_TRIED:]):
        if text.startswith("{", m.end()):
            group = _brace_group(text, m.end())
            if group is not None:
                return group[0]
            continue  # unclosed: fall back to an earlier, complete one
        tail = _BARE.match(text, m.end())  # `\boxed 5` form, no braces
        if tail:
            return tail.group(0)
    return None


def _strip_sentence_end(s: str) -> str:
    s = re.split(r"\.(?:\s|$)", s.strip())[0]  # keep the first sentence; "3.5" keeps its point
    s = re.sub(r"[.!]+$", "", s).strip()  # "The answer is 3.5." -> "3.5"
    return s.strip("$ ").strip()


def select_answer(response: str) -> tuple[str, str] | None:
    """(span, method) for the graded part of `response`, or None if there is nothing to grade.

    Order: last <answer>...</answer> block (inside it: its last \\boxed{}, else "the answer is x", else the
    block's first sentence); else last \\boxed{}; else `#### x`; else "the answer is x"; else the last number.
    """
    # rfind, not a regex: a lazy <answer>(.*?)</answer> is quadratic on texts full of "<answer>"
    close = response.rfind("</answer>")
    open_ = response.rfind("<answer>", 0, close) if close != -1 else -1
    if open_ != -1:
        block = response[open_ + len("<answer>") : close]
        boxed = last_boxed(block)
        said = _ANSWER_IS.findall(block) if boxed is None else []
        if boxed is not None:
            span = boxed
        elif said and _strip_sentence_end(said[-1]):
            span = _strip_sentence_end(said[-1])  # "<answer>The answer is 5.</answer>"
        else:
            span = _strip_sentence_end(block)
        return (span.strip(), "answer_tag") if span.strip() else None
    boxed = last_boxed(response)
    if boxed is not None:
        return (boxed.strip(), "boxed") if boxed.strip() else None
    hashes = _HASHES.findall(response)
    if hashes and _strip_sentence_end(hashes[-1]):
        return _strip_sentence_end(hashes[-1]), "hashes"
    said = _ANSWER_IS.findall(response)
    if said and _strip_sentence_end(said[-1]):
        return _strip_sentence_end(said[-1]), "answer_is"
    last = None
    for last in _NUMBER.finditer(response):  # noqa: B007 - we want the last match
        pass
    if last is not None:
        return last.group(0), "last_number"
    return None
