"""The "math" verifier: select the final answer, then compare it with the gold answer exactly or with sympy.

Plain numbers, and tuples, intervals and sets of them, take an exact, sympy-free path; everything else goes
through math-verify with guards against its known hangs and lossy float comparisons. Run it through
`score_batch` for hard time limits. The policy is documented in docs/rewards.md.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rewards.math import exact
from rewards.math.answer import select_answer
from rewards.math.normalize import Normalized, looks_compound, normalize, top_level_parts
from rewards.registry import register_verifier
from rewards.types import Reward

MAX_SPAN = 2000  # characters; a longer "final answer" is not one, and sympy on it could take minutes
MAX_EXACT_SPAN = 100_000  # long plain numbers (huge integers) are still compared, exactly
MAX_NESTING = 64  # deeper bracket nesting is refused: parsers here are recursive
_FORBIDDEN = re.compile(r"\\(?:def|gdef|edef|let|newcommand|renewcommand|providecommand|catcode|input|include)\b")
_MAX_EXP_DEPTH = 2  # a^{b^{c}} is fine; deeper towers only go through the exact engine


@dataclass(frozen=True)
class _Side:
    """One answer, analysed once: normalised text, exact AST if purely numeric, value if computable."""

    norm: Normalized
    ast: Any = None
    value: Fraction | None = None
    too_large: bool = False

    @property
    def is_exact(self) -> bool:
        return self.ast is not None


def _nesting(s: str) -> int:
    depth = best = 0
    for c in s:
        if c in "([{":
            depth += 1
            best = max(best, depth)
        elif c in ")]}":
            depth -= 1
    return best


def _analyse(text: str) -> _Side:
    norm = normalize(text)
    if _nesting(norm.text) > MAX_NESTING:
        return _Side(norm)
    try:
        ast = exact.parse(norm.text)
    except exact.NotExact:
        return _Side(norm)
    try:
        return _Side(norm, ast, exact.evaluate(ast))
    except exact.TooLarge:
        return _Side(norm, ast, too_large=True)
    except exact.NotExact:  # e.g. 2^{1/2}: numeric but irrational, leave it to sympy
        return _Side(norm)


def _exp_depth(s: str) -> int:
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
            # a bare exponent like 9^9 ends at the next non-digit; chains 9^9^9 keep counting
            k = j
            while k < len(s) and (s[k].isalnum() or s[k] == "."):
                k += 1
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


def _mv():
    import math_verify  # imported lazily: the parent process never needs it

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call with timeouts off
    return math_verify


def _balanced(s: str) -> bool:
    depth = 0
    for i, c in enumerate(s):
        if c in "{}" and i > 0 and s[i - 1] == "\\":
            continue  # \{ and \} are set braces, not groups
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def _mv_parse(text: str) -> list:
    """math-verify's parse, or [] when it yields no sympy object (it falls back to the raw string)."""
    import sympy

    if not _balanced(text):
        return []
    mv = _mv()
    configs = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    # math-verify's own SIGALRM timeouts are off: they only work on the main thread and miss C-level
    # hangs; the worker pool enforces time limits instead (soft alarm, then a hard kill).
    parsed = mv.parse("\\boxed{" + text + "}", configs, parsing_timeout=None)
    if not parsed or not isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return []
    units = {s: sympy.I for s in getattr(parsed[0], "free_symbols", ()) if s.name == "i"}
    if units:  # latex2sympy reads i as a variable; in a final answer it is the imaginary unit
        parsed = [parsed[0].subs(units), *parsed[1:]]
    return parsed


def _sympy_guard(gold_expr, pred_expr) -> bool:
    """Re-check a math-verify "equal" between two numbers without trusting low-precision floats."""
    import sympy

    if not (isinstance(gold_expr, sympy.Expr) and isinstance(pred_expr, sympy.Expr)):
        return True
    if gold_expr.free_symbols or pred_expr.free_symbols or not (gold_expr.is_number and pred_expr.is_number):
        return True
    g, p = gold_expr.evalf(40), pred_expr.evalf(40)
    scale = max(abs(g), abs(p))
    if scale == 0:
        return True
    rel = abs(g - p) / scale
    has_float = bool(gold_expr.atoms(sympy.Float) or pred_expr.atoms(sympy.Float))
    if not has_float:
        return bool(rel <= 1e-20)  # both exact: 40-digit evaluation decides, e.g. 1/2004! vs 1/2006!
    if scale < 1e-6 or scale > 1e12:
        return bool(rel <= 1e-9)  # math-verify rounds to 6 decimals: meaningless at these magnitudes
    return True


@functools.lru_cache(maxsize=4096)
def _gold(gold: str) -> tuple[_Side | None, list | None, str]:
    """Analyse the gold once per worker: (side, math-verify parse, error message)."""
    if not gold.strip() or len(gold) > MAX_EXACT_SPAN or _FORBIDDEN.search(gold):
        return None, None, "gold answer is empty, too long or uses forbidden macros"
    side = _analyse(gold)
    if side.is_exact or _exact_container(side.norm.text):
        return side, None, ""  # valid as it stands; math-verify parses it only if a comparison needs sympy
    if len(gold) > MAX_SPAN or _nesting(side.norm.text) > MAX_NESTING:
        return None, None, "gold answer is too long or too deeply nested for symbolic comparison"
    if _exp_depth(side.norm.text) > _MAX_EXP_DEPTH:
        return None, None, "gold answer is a non-numeric power tower"
    parsed = _mv_parse(side.norm.text)
    if not parsed:
        return None, None, f"gold answer does not parse: {gold!r}"
    return side, parsed, ""


def _container(text: str) -> tuple[str, str, list[str]] | None:
    """(left, right, items) for a single bracketed tuple, interval or set of comma-separated items, else None."""
    if text.startswith("\\{") and text.endswith("\\}"):
        left, right, inner = "{", "}", text[2:-2]
    elif text[:1] in "([" and text[-1:] in ")]":
        left, right, inner = text[0], text[-1], text[1:-1]
    else:
        return None
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None  # "(1,2)\\cup(3,4)": the outer brackets do not enclose the whole text
        elif c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return left, right, items


def _exact_container(text: str) -> bool:
    c = _container(text) if len(text) <= MAX_SPAN and _nesting(text) <= MAX_NESTING else None
    return c is not None and all(_analyse(item).value is not None for item in c[2])


def _structured_equal(gold: str, pred: str) -> bool | None:
    """Tuples, intervals and sets of plain numbers compared exactly, item by item; None when undecided.

    Brackets must match, so [1,2) is not [1,2]; sets ignore order. A set against a tuple is left to sympy."""
    g, p = _container(gold), _container(pred)
    if g is None or p is None or (g[0] == "{") != (p[0] == "{"):
        return None
    sides = [[_analyse(item) for item in c[2]] for c in (g, p)]
    if any(s.value is None or s.norm.percent for side in sides for s in side):
        return None
    gv, pv = ([s.value for s in side] for side in sides)
    if g[0] == "{":
        return set(gv) == set(pv)
    return (g[0], g[1]) == (p[0], p[1]) and gv == pv


def _percent_values(side: _Side) -> list[Fraction]:
    return [side.value, side.value / 100] if side.norm.percent else [side.value]


def _equal(gold: _Side, gold_parsed: list | None, pred: _Side) -> tuple[bool, str]:
    """(equal?, how) for one predicted part against the gold."""
    if gold.norm.text == pred.norm.text and gold.norm.percent == pred.norm.percent:
        return True, "string"
    if gold.is_exact and pred.is_exact:
        if gold.too_large or pred.too_large:
            return exact.canonical(gold.ast) == exact.canonical(pred.ast), "structural"
        if gold.value is not None and pred.value is not None:
            return any(g == p for g in _percent_values(gold) for p in _percent_values(pred)), "exact"
    if (gold.is_exact and gold.too_large) or (pred.is_exact and pred.too_large):
        return False, "too_large"  # never hand a huge number to sympy
    plain = not (gold.norm.percent or pred.norm.percent)  # a % was stripped from the whole text
    if plain and len(pred.norm.text) <= MAX_SPAN and _nesting(pred.norm.text) <= MAX_NESTING:
        same = _structured_equal(gold.norm.text, pred.norm.text)
        if same is not None:
            return same, "structured"
    if len(pred.norm.text) > MAX_SPAN or _nesting(pred.norm.text) > MAX_NESTING:
        return False, "too_long_or_nested"
    if _exp_depth(pred.norm.text) > _MAX_EXP_DEPTH:
        return False, "power_tower"
    if gold_parsed is None:
        gold_parsed = _mv_parse(gold.norm.text)
        if not gold_parsed:
            return False, "gold_unparseable"
    pred_parsed = _mv_parse(pred.norm.text)
    if not pred_parsed:
        return False, "unparseable"
    mv = _mv()
    if not mv.verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return False, "sympy"
    return _sympy_guard(gold_parsed[0], pred_parsed[0]), "sympy"


@register_verifier("math")
def math_verifier(response: str, reference, **metadata) -> Reward:
    """Score 1 if the selected final answer equals `reference` (the gold answer as a string)."""
    gold, gold_parsed, err = _gold(str(reference))
    if gold is None:
        return Reward.fail("error", reason=err)
    selected = select_answer(response)
    if selected is None:
        return Reward.fail("no_answer")
    span, method = selected
    info = {"answer": span[:200], "method": method}
    if len(span) > MAX_EXACT_SPAN or _FORBIDDEN.search(span):
        return Reward.wrong(reason="answer too long or uses forbidden macros", **info)
    pred = _analyse(span)
    parts = [pred]
    if not looks_compound(gold.norm.text):
        pieces = top_level_parts(pred.norm.text)
        if len(pieces) > 1:
            parts = [_analyse(p) for p in pieces]
    verdicts = [_equal(gold, gold_parsed, p) for p in parts]
    if len(parts) > 1:
        # Several different final answers: credit would reward hedging, so none is given.
        if all(ok for ok, _ in verdicts):
            return Reward.ok(how="all_parts_equal", **info)
        return Reward.wrong(reason="hedged", parts=len(parts), **info)
    ok, how = verdicts[0]
    if how == "gold_unparseable":
        return Reward.fail("error", reason=f"gold answer does not parse: {reference!r}")
    return Reward.ok(how=how, **info) if ok else Reward.wrong(how=how, **info)


math_verifier.timeout_s = 10.0  # default hard limit per item in score_batch
