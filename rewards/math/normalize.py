"""Light, string-level clean-up of a math answer before it is compared (units, degrees, `x =`, separators)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WRAPPERS = [("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
# (?<!\\): the `\ ` that ends a matrix row `\\ ` is a row break, not a space
_DROP = re.compile(r"\\left|\\right|\\displaystyle|(?<!\\)\\[,;:! ]|\\limits|\\mathrm(?=\{\s*[a-zA-Z]\s*\})")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\s*\{?\s*\\text\{\s*o\s*\}\s*\}?")
_PERCENT = re.compile(r"\\?%")
_UNIT_TEXT = re.compile(r"(?<=[\d}.)])\s*\\(?:text|mbox|mathrm|textbf)\s*\{[^{}]*\}(?:\^\s*\{?\d\}?)?\s*$")
_UNIT_WORD = re.compile(r"^(-?[\d.,]+)\s+[a-zA-Z]{2,}(?:\^\d)?\.?$")  # "5 cm" -> "5"; "3x" is left alone
_WHOLE_TEXT = re.compile(r"^\\(?:text|mbox|textbf|mathrm)\s*\{([^{}]*)\}$")
_VAR = r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?"
# `x =`, `\theta =`, `(p, q) =`: the name of what is asked for, dropped unless the gold is itself an equation
_LHS = re.compile(rf"^\s*(?:{_VAR}|\(\s*{_VAR}(?:\s*,\s*{_VAR})+\s*\))\s*=\s*(?!=)")
# `1{,}234` and MATH's `11,\! 111` separate thousands wherever they stand ...
_GROUP_MARK = re.compile(r"(?<=\d)(?:\{,\}|,\s*\\!\s*)(?=\d{3}(?!\d))")
# ... `1,234` and `1 234` only in an answer that is that one number: `(12,102)` is an interval. A leading 0
# makes `0,111` a list or a decimal, never 111. One separator throughout.
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?P<sep>[, ])\d{3}(?:(?P=sep)\d{3})*(?:\.\d+)?")
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")  # what is left after thousands are removed: 1,22 or 1000,99
_EQUALS = re.compile(r"(?<![<>!=\\])=(?!=)")  # an equation's `=`, not part of <=, >=, != or ==


@dataclass(frozen=True)
class Normalized:
    """Normalised answer text; `percent` if a % was stripped, `lhs` the `x =` dropped from its front."""

    text: str
    percent: bool = False
    lhs: str = ""

    @property
    def equation(self) -> str:
        """The text with its `x =` kept: compared when the gold is itself an equation."""
        return self.lhs + self.text

    @property
    def is_equation(self) -> bool:
        return _EQUALS.search(self.text) is not None


def unwrap(s: str) -> str:
    """`s` without the math delimiters around all of it: $...$, \\(...\\), \\[...\\]."""
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s, changed = s[len(left) : -len(right)].strip(), True
    return s


def normalize(s: str) -> Normalized:
    """Strip wrappers, spacing commands, degrees, percent, trailing units and a leading `x =`."""
    s = unwrap(s)
    s = _GROUP_MARK.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", "").replace("\\!", "")
    s = _DROP.sub("", s)
    s = _DEGREE.sub("", s)
    percent = bool(_PERCENT.search(s))
    s = _PERCENT.sub("", s)
    s = s.strip().rstrip(".").strip()
    for _ in range(3):  # "5 \text{ cm}^2", possibly repeated
        s2 = _UNIT_TEXT.sub("", s).strip()
        if s2 == s:
            break
        s = s2
    whole = _WHOLE_TEXT.match(s)
    if whole:
        s = whole.group(1).strip()
    s = _UNIT_WORD.sub(r"\1", s)
    lhs = ""
    if s.count("=") == 1 and "\\" not in s.split("=")[1][:1]:
        m = _LHS.match(s)
        lhs, s = (m.group(0), s[m.end() :]) if m else ("", s)
    if _THOUSANDS.fullmatch(s.strip()):
        s = re.sub("[, ]", "", s)
    return Normalized(s.strip(), percent, lhs)


def read_decimal_comma(norm: Normalized) -> Normalized:
    """`1,22` read as 1.22: only a lone number with one comma that is not a thousands separator (see the policy)."""
    if _DECIMAL_COMMA.fullmatch(norm.text):
        return Normalized(norm.text.replace(",", "."), norm.percent, norm.lhs)
    return norm


_SPLIT = re.compile(r"\s+or\s+|\s+and\s+|\\text\{\s*(?:or|and)\s*\}|\\quad|\\lor|;")


def top_level_parts(s: str) -> list[str]:
    """Split at commas / `or` / `and` / `;` that sit outside all brackets (for hedge detection)."""
    s = _SPLIT.sub(",", s)
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def looks_compound(gold: str) -> bool:
    """True if the gold answer is itself several values (tuple, set, interval, list, matrix, equation system)."""
    g = gold.strip()
    return (
        len(top_level_parts(g)) > 1
        or g[:1] in "([{"
        or g.startswith(("\\{", "\\begin", "\\left"))
        or "\\cup" in g
        or "\\pm" in g
    )
