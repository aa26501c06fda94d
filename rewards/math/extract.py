"""The last mathematical expression in free text, found with math-verify's own extraction regexes and priorities.

math-verify is imported lazily: only the reward workers need it, never the trainer.
"""

from __future__ import annotations

import functools
import itertools

from rewards.math import exact, mv
from rewards.math.guards import sympy_refusal
from rewards.math.normalize import normalize

MAX_WINDOW = 4000  # only the tail is searched: math-verify's regexes are quadratic on texts like "1 1 1 ..."
MAX_TRIES = 8  # candidates parsed per priority level, so a tail full of unparseable $...$ stays cheap
_ENVS = ("first", *(f"next{i}" for i in range(1, 6)))  # math-verify's names for up to six joined LaTeX groups


@functools.lru_cache(maxsize=1)
def _levels() -> list[list[tuple]]:
    """(pattern, config) pairs of math-verify's LaTeX and expression extraction, grouped by priority, best first."""
    from math_verify.parser import get_extraction_regexes

    math_verify = mv.module()
    # Boxes are purerl's own rule (answer.py), applied before this search: math-verify's boxed patterns stay off.
    configs = [math_verify.LatexExtractionConfig(boxed_match_priority=-1), math_verify.ExprExtractionConfig()]
    ranked = sorted(
        ((priority, pattern, cfg) for regexes, cfg in get_extraction_regexes(configs) for pattern, priority in regexes),
        key=lambda x: x[0],
    )
    return [[(p, c) for _, p, c in level] for _, level in itertools.groupby(ranked, key=lambda x: x[0])]


def _latex_span(groups: dict) -> str:
    """The LaTeX of a match, its joined groups ("$1$, $2$ and $3$") as a comma list, with \\% where it had a percent."""
    parts = []
    for env in _ENVS:
        body = next((v for k, v in groups.items() if k.startswith(env + "_latex") and v), None)
        if body is not None:
            parts.append(body.strip() + ("\\%" if groups.get(env + "_percent") else ""))
    return ", ".join(parts)


def _expr_span(groups: dict) -> str:
    """A plain expression or number as written (a decimal comma kept, for the verifier's policy to read)."""
    if groups.get("expr"):
        return groups["expr"].strip()
    integer = next((v for k, v in groups.items() if k.startswith("integer") and v), "")
    decimal = next((v for k, v in groups.items() if k.startswith("decimal") and v), "")
    return integer + decimal + ("%" if groups.get("percent") else "")


def _window(text: str) -> str:
    """The tail that is searched, started at a line break so that no inline $...$ pair is cut in two."""
    if len(text) <= MAX_WINDOW:
        return text
    tail = text[-MAX_WINDOW:]
    cut = tail.find("\n")
    return tail[cut + 1 :] if cut != -1 else tail


def _parses(span: str) -> bool:
    """True if the verifier can read `span`: a plain number, or something math-verify parses once normalised."""
    text = normalize(span).text
    try:
        exact.parse(text)
        return True
    except exact.NotExact:
        return bool(mv.parse(text))  # cached: the comparison reuses this parse


def _accept(match, cfg) -> str | None:
    """The match's span if the verifier can read it (or must refuse it: then it is graded, and refused)."""
    groups = match.groupdict()
    span = _latex_span(groups) if isinstance(cfg, mv.module().LatexExtractionConfig) else _expr_span(groups)
    if not span:
        return None
    if sympy_refusal(span):
        return span  # the last expression is a power tower or the like: never skipped for an earlier one
    return span if _parses(span) else None


def last_expression(text: str) -> str | None:
    """The expression math-verify would extract from `text` (best priority, then rightmost), as a LaTeX span."""
    tail = _window(text)
    for level in _levels():
        matches = [(m, cfg) for pattern, cfg in level for m in pattern.finditer(tail)]
        matches.sort(key=lambda x: (x[0].end(), -x[0].start()), reverse=True)  # rightmost first, as math-verify
        for m, cfg in matches[:MAX_TRIES]:
            span = _accept(m, cfg)
            if span:
                return span
    return None
