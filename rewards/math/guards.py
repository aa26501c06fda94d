"""What never reaches sympy or math-verify: spans too long, too deeply nested, power towers, TeX macro definitions."""

from __future__ import annotations

import re

from rewards.math import exact

MAX_SPAN = 2000  # characters; a longer "final answer" is not one, and sympy on it could take minutes
MAX_EXACT_SPAN = 100_000  # long plain numbers (huge integers) are still compared, exactly
MAX_NESTING = 64  # deeper bracket nesting is refused: parsers here are recursive
MAX_OPERATORS = 400  # no final answer has more; 1-1-1-... a thousand times overflows latex2sympy's recursion
_OPERATOR = re.compile(r"[-+*/^!=<>]")
MAX_EXP_DEPTH = 2  # a^{b^{c}} is fine; deeper towers hang math-verify (its issues #63, #65): exact engine only
MAX_EAGER = 10_000  # sympy computes n! and binomials eagerly: (10^{9})! + x would never come back
_BINOM = re.compile(r"\\[dt]?binom\s*(?=\{)")
FORBIDDEN = re.compile(r"\\(?:def|gdef|edef|let|newcommand|renewcommand|providecommand|catcode|input|include)\b")


def nesting(s: str) -> int:
    """Deepest bracket nesting of `s`, counting (, [ and { alike."""
    depth = best = 0
    for c in s:
        if c in "([{":
            depth += 1
            best = max(best, depth)
        elif c in ")]}":
            depth -= 1
    return best


def _skip_bare_exponent(s: str, j: int) -> int:
    """End of a bare exponent such as the `9` of 9^9, starting at s[j] (spaces skipped before it)."""
    k = j
    while k < len(s) and (s[k].isalnum() or s[k] == "."):
        k += 1
    return k


def exp_depth(s: str) -> int:
    """Deepest nesting of exponents, e.g. 9^{9^{9}} -> 3; used to keep power towers away from sympy."""
    depth, best, stack = 0, 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "^":
            depth += 1
            best = max(best, depth)
            j = i + 1
            while j < len(s) and s[j].isspace():
                j += 1
            if j < len(s) and s[j] == "{":
                stack.append(True)  # this brace group is an exponent: leaving it ends the level
                i = j + 1
                continue
            k = _skip_bare_exponent(s, j)  # chains 9^9^9 keep counting
            if k >= len(s) or s[k] != "^":
                depth -= 1
            i = k
            continue
        if c == "{":
            stack.append(False)
        elif c == "}" and stack:
            if stack.pop():
                depth -= 1
        i += 1
    return best


def balanced(s: str) -> bool:
    """True if the {} groups of `s` are balanced; \\{ and \\} are set braces, not groups."""
    depth = 0
    for i, c in enumerate(s):
        if c in "{}" and i > 0 and s[i - 1] == "\\":
            continue
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def _group_before(s: str, end: int) -> str:
    """The operand that ends at s[end - 1]: a run of digits, or a (...) or {...} group."""
    if end > 0 and s[end - 1] in ")}":
        opener, depth = "(" if s[end - 1] == ")" else "{", 0
        for i in range(end - 1, -1, -1):
            depth += (s[i] == s[end - 1]) - (s[i] == opener)
            if depth == 0:
                return s[i : end]
        return ""
    start = end
    while start > 0 and s[start - 1].isdigit():
        start -= 1
    return s[start:end]


def _too_big(operand: str) -> bool:
    """True if `operand` is a plain number above MAX_EAGER (or too large to compute at all)."""
    try:
        return abs(exact.evaluate(exact.parse(operand))) > MAX_EAGER
    except exact.TooLarge:
        return True
    except exact.NotExact:
        return False  # symbolic, like (n+1)!: sympy leaves it unevaluated


def brace_group(text: str, start: int, limit: int = MAX_EXACT_SPAN) -> tuple[str, int] | None:
    """(content, end) of the {...} group opening at text[start], nested braces handled; None if it does not
    close within `limit` characters. An escaped brace \\{ does not open or close a group."""
    if start >= len(text) or text[start] != "{":
        return None
    depth, i, end = 0, start, min(len(text), start + limit)
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return text[start + 1 : i], i + 1
        i += 1
    return None


def _eager_operands(s: str):
    """The operands sympy would evaluate eagerly: of each n! (not !=) and each \\binom{a}{b}."""
    for m in re.finditer(r"!(?!=)", s):
        yield _group_before(s, m.start())
    for m in _BINOM.finditer(s):
        top = brace_group(s, m.end())
        bottom = brace_group(s, top[1]) if top else None
        yield from (group[0] for group in (top, bottom) if group)


def sympy_refusal(text: str) -> str | None:
    """Why `text` must not be handed to math-verify or sympy, or None if it may be."""
    if len(text) > MAX_SPAN or nesting(text) > MAX_NESTING:
        return "too_long_or_nested"
    if len(_OPERATOR.findall(text)) > MAX_OPERATORS:
        return "too_many_operators"
    if FORBIDDEN.search(text):
        return "forbidden_macro"
    if exp_depth(text) > MAX_EXP_DEPTH:
        return "power_tower"
    if not balanced(text):
        return "unbalanced"
    if any(_too_big(op) for op in _eager_operands(text) if op):
        return "huge_factorial"
    return None
