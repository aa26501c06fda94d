"""math-verify's parse and verify behind purerl's guards, and the 40-digit re-check of its numeric verdicts.

math-verify (and sympy) are imported lazily: only the reward workers need them, never the trainer.
"""

from __future__ import annotations

import functools
import logging

from rewards.math.guards import sympy_refusal


@functools.lru_cache(maxsize=1)
def module():
    """The math_verify module, imported once, with its per-call warnings silenced."""
    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call with timeouts off
    return math_verify


def _imaginary_unit(parsed: list) -> list:
    """latex2sympy reads i as a variable; in a final answer it is the imaginary unit."""
    import sympy

    units = {s: sympy.I for s in getattr(parsed[0], "free_symbols", ()) if s.name == "i"}
    return [parsed[0].subs(units), *parsed[1:]] if units else parsed


@functools.lru_cache(maxsize=512)
def parse(text: str) -> tuple:
    """math-verify's parse of one normalised answer (LaTeX and expression configs), () if it yields no sympy
    object or the guards refuse the text. Cached: answer extraction and comparison parse the same spans."""
    import sympy

    if sympy_refusal(text):
        return ()
    mv = module()
    configs = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    # math-verify's own SIGALRM timeouts are off: they only work on the main thread and miss C-level
    # hangs; the worker pool enforces time limits instead (soft alarm, then a hard kill).
    parsed = mv.parse("\\boxed{" + text + "}", configs, parsing_timeout=None)
    if not parsed or not isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return ()
    try:
        return tuple(_imaginary_unit(parsed))
    except Exception:  # noqa: BLE001 - sympy can fail on odd trees; the parse stands as it was
        return tuple(parsed)


def verify(gold: tuple, pred: tuple) -> bool:
    """math-verify's verdict (it catches its own errors), an "equal" between numbers re-checked at 40 digits."""
    if not module().verify(list(gold), list(pred), timeout_seconds=None):
        return False
    return numbers_agree(gold[0], pred[0])


def _value(expr):
    """40-digit value of a numeric sympy expression, or None when sympy cannot reduce it to a number."""
    import sympy

    try:
        value = sympy.N(expr.doit(), 40)  # doit(): math-verify keeps a percent as an unevaluated product
    except Exception:  # noqa: BLE001 - sympy raises many types on odd trees; no value then
        return None
    return value if value.is_number else None


def numbers_agree(gold_expr, pred_expr) -> bool:
    """Re-check a math-verify "equal" between two numbers without trusting its 6-decimal rounding."""
    import sympy

    if not (isinstance(gold_expr, sympy.Expr) and isinstance(pred_expr, sympy.Expr)):
        return True
    if gold_expr.free_symbols or pred_expr.free_symbols or not (gold_expr.is_number and pred_expr.is_number):
        return True
    g, p = _value(gold_expr), _value(pred_expr)
    if g is None or p is None:
        return True  # nothing to re-check with: math-verify's verdict stands
    diff = sympy.N(sympy.Abs(g - p), 40)
    scale = sympy.N(sympy.Max(sympy.Abs(g), sympy.Abs(p)), 40)
    if not (diff.is_Number and scale.is_Number) or scale == 0:
        return True  # sympy cannot order them (an unevaluated form): math-verify's verdict stands
    rel = diff / scale
    if not (gold_expr.atoms(sympy.Float) or pred_expr.atoms(sympy.Float)):
        return bool(rel <= 1e-20)  # both exact: 40-digit evaluation decides, e.g. 1/2004! vs 1/2006!
    if scale < 1e-6 or scale > 1e12:
        return bool(rel <= 1e-9)  # math-verify rounds to 6 decimals: meaningless at these magnitudes
    return True
