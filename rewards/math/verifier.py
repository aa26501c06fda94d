"""The "math" verifier: select the final answer, then compare it with the gold answer exactly or with math-verify.

Plain numbers, and tuples, intervals and sets of them, take an exact, sympy-free path; everything else goes
through math-verify's parse and verify, behind guards against its known hangs and lossy float comparisons.
Run it through `score_batch` for hard time limits. The policy is documented in docs/rewards.md.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, get_args

from rewards.math import exact, mv
from rewards.math.answer import Untagged, reference_span, select_answer
from rewards.math.guards import FORBIDDEN, MAX_EXACT_SPAN, MAX_NESTING, MAX_SPAN, nesting, sympy_refusal
from rewards.math.normalize import Normalized, looks_compound, normalize, read_decimal_comma, top_level_parts
from rewards.registry import register_verifier, register_verifier_factory
from rewards.types import Reward

DecimalComma = Literal["never", "prediction", "both"]
_DECIMAL = re.compile(r"-?(\d*)\.(\d+)")
FLOAT_DIGITS = 15  # a decimal this long is a double's printout (repr gives 15 to 17 digits), not an exact value


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


def _analyse(text: str, decimal_comma: bool = False) -> _Side:
    """Normalise `text` (reading `1,22` as 1.22 if `decimal_comma`) and evaluate it exactly if it is a plain number."""
    norm = normalize(text)
    if decimal_comma:
        norm = read_decimal_comma(norm)
    if nesting(norm.text) > MAX_NESTING:
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


@functools.lru_cache(maxsize=4096)
def _gold(reference: str, decimal_comma: bool) -> tuple[_Side | None, tuple | None, str]:
    """Analyse the gold once per worker: (side, math-verify parse, error message)."""
    if not reference.strip() or len(reference) > MAX_EXACT_SPAN or FORBIDDEN.search(reference):
        return None, None, "gold answer is empty, too long or uses forbidden macros"
    side = _analyse(reference_span(reference), decimal_comma)
    if side.is_exact or _exact_container(side.norm.text):
        return side, None, ""  # valid as it stands; math-verify parses it only if a comparison needs sympy
    refusal = sympy_refusal(side.norm.text)
    if refusal:
        return None, None, f"gold answer is refused for symbolic comparison ({refusal})"
    parsed = mv.parse(side.norm.text)
    if not parsed:
        return None, None, f"gold answer does not parse: {reference!r}"
    return side, parsed, ""


def _container(text: str) -> tuple[str, str, list[str]] | None:
    """(left, right, items) for a single bracketed tuple, interval or set of comma-separated items, else None."""
    if text.startswith("\\{") and text.endswith("\\}"):
        left, right, inner = "{", "}", text[2:-2]
    elif len(text) >= 2 and text[0] in "([" and text[-1] in ")]":
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
    c = _container(text) if len(text) <= MAX_SPAN and nesting(text) <= MAX_NESTING else None
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


def _is_printout(side: _Side) -> bool:
    """True for a decimal of FLOAT_DIGITS or more significant digits, like 0.0833333333333333."""
    m = _DECIMAL.fullmatch(side.norm.text)
    return m is not None and len((m.group(1) + m.group(2)).lstrip("0")) >= FLOAT_DIGITS


def _numbers_equal(gold: _Side, pred: _Side) -> bool:
    """Exact equality (a percent also matches its value and its hundredth); a double's printout matches the
    value it rounds, to 1e-14: 0.0833333333333333 is 1/12, while 0.3333333 is not 1/3."""
    if any(g == p for g in _percent_values(gold) for p in _percent_values(pred)):
        return True
    if not (_is_printout(gold) or _is_printout(pred)):
        return False
    return abs(gold.value - pred.value) <= max(abs(gold.value), abs(pred.value)) * Fraction(1, 10**14)


def _exact_equal(gold: _Side, pred: _Side) -> tuple[bool, str] | None:
    """The sympy-free verdicts: same text, exact numbers, huge numbers by structure; None when undecided."""
    if gold.norm.text == pred.norm.text and gold.norm.percent == pred.norm.percent:
        return True, "string"
    if gold.is_exact and pred.is_exact:
        if gold.too_large or pred.too_large:
            return exact.canonical(gold.ast) == exact.canonical(pred.ast), "structural"
        if gold.value is not None and pred.value is not None:
            return _numbers_equal(gold, pred), "exact"
    if (gold.is_exact and gold.too_large) or (pred.is_exact and pred.too_large):
        return False, "too_large"  # never hand a huge number to sympy
    plain = not (gold.norm.percent or pred.norm.percent)  # a % was stripped from the whole text
    if plain and len(pred.norm.text) <= MAX_SPAN and nesting(pred.norm.text) <= MAX_NESTING:
        same = _structured_equal(gold.norm.text, pred.norm.text)
        if same is not None:
            return same, "structured"
    return None


def _sympy_equal(gold: _Side, gold_parsed: tuple | None, pred: _Side) -> tuple[bool, str]:
    """math-verify's verify on both parses (mv.py re-checks its numeric "equal")."""
    # A gold that is an equation is compared with the prediction's equation, `y =` and all.
    text = pred.norm.equation if gold.norm.is_equation else pred.norm.text
    refusal = sympy_refusal(text)
    if refusal:
        return False, refusal
    if gold_parsed is None:
        gold_parsed = mv.parse(gold.norm.text)
        if not gold_parsed:
            return False, "gold_unparseable"
    pred_parsed = mv.parse(text)
    if not pred_parsed:
        return False, "unparseable"
    return mv.verify(gold_parsed, pred_parsed), "sympy"


def _equal(gold: _Side, gold_parsed: tuple | None, pred: _Side) -> tuple[bool, str]:
    """(equal?, how) for one predicted part against the gold."""
    verdict = _exact_equal(gold, pred)
    return verdict if verdict is not None else _sympy_equal(gold, gold_parsed, pred)


@dataclass(frozen=True)
class MathVerifier:
    """Grades the final answer of a response against the gold answer (policy: docs/rewards.md).

    untagged: what is graded in a response without an <answer> block: "expression" (its boxes, `#### x`,
        "the answer is x", else its last expression), "boxed" (its boxes only) or "none" (nothing: no_answer).
    decimal_comma: when `1,22` reads as 1.22: "prediction" (in a prediction, against a gold that is a single
        value), "both" (the gold too) or "never" (a comma always separates items).
    """

    untagged: Untagged = "expression"
    decimal_comma: DecimalComma = "prediction"
    timeout_s: float = 10.0  # score_batch's hard limit per item

    @property
    def name(self) -> str:
        if (self.untagged, self.decimal_comma) == ("expression", "prediction"):
            return "math"
        return f"math(untagged={self.untagged!r}, decimal_comma={self.decimal_comma!r})"

    def __call__(self, response: str, reference, **metadata) -> Reward:
        gold, gold_parsed, err = _gold(str(reference), self.decimal_comma == "both")
        if gold is None:
            return Reward.fail("error", reason=err)
        selected = select_answer(response, self.untagged)
        if selected is None:
            return Reward.fail("no_answer")
        span, method = selected
        info = {"answer": span[:200], "method": method}
        if len(span) > MAX_EXACT_SPAN or FORBIDDEN.search(span):
            return Reward.wrong(reason="answer too long or uses forbidden macros", **info)
        compound = looks_compound(gold.norm.text)
        pred = _analyse(span, self.decimal_comma != "never" and not compound)
        parts = [pred]
        if not compound:
            pieces = top_level_parts(pred.norm.text)
            if len(pieces) > 1:
                parts = [_analyse(p) for p in pieces]
        return _verdict([_equal(gold, gold_parsed, p) for p in parts], reference, info)


def _verdict(verdicts: list[tuple[bool, str]], reference, info: dict) -> Reward:
    """The Reward for the verdicts on each predicted part (several parts: a hedge unless all are equal)."""
    if len(verdicts) > 1:
        # Several different final answers: credit would reward hedging, so none is given.
        if all(ok for ok, _ in verdicts):
            return Reward.ok(how="all_parts_equal", **info)
        return Reward.wrong(reason="hedged", parts=len(verdicts), **info)
    ok, how = verdicts[0]
    if how == "gold_unparseable":
        return Reward.fail("error", reason=f"gold answer does not parse: {reference!r}")
    return Reward.ok(how=how, **info) if ok else Reward.wrong(how=how, **info)


_CHOICES = {"untagged": get_args(Untagged), "decimal_comma": get_args(DecimalComma)}


@register_verifier_factory("math")
def math_reward(untagged: Untagged = "expression", decimal_comma: DecimalComma = "prediction") -> MathVerifier:
    """Factory for a math verifier with its policies set; in a config: `verifier: "math(untagged='none')"`."""
    for key, value in (("untagged", untagged), ("decimal_comma", decimal_comma)):
        if value not in _CHOICES[key]:
            raise ValueError(f"{key} must be one of {_CHOICES[key]}, got {value!r}")
    return MathVerifier(untagged, decimal_comma)


math_verifier = register_verifier("math")(MathVerifier())
