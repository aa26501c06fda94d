"""Light, string-level clean-up of a math answer before it is compared (units, degrees, `x =`, separators)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WRAPPERS = [("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
_DROP = re.compile(r"\\left|\\right|\\displaystyle|\\[,;:! ]|\\limits|\\mathrm(?=\{\s*[a-zA-Z]\s*\})")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\s*\{?\s*\\text\{\s*o\s*\}\s*\}?")
_PERCENT = re.compile(r"\\?%")
_UNIT_TEXT = re.compile(r"(?<=[\d}.)])\s*\\(?:text|mbox|mathrm|textbf)\s*\{[^{}]*\}(?:\^\s*\{?\d\}?)?\s*$")
_UNIT_WORD = re.compile(r"^(-?[\d.,]+)\s+[a-zA-Z]{2,}(?:\^\d)?\.?$")  # "5 cm" -> "5"; "3x" is left alone
_WHOLE_TEXT = re.compile(r"^\\(?:text|mbox|textbf|mathrm)\s*\{([^{}]*)\}$")
_LHS = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*=\s*(?!=)")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:,|\{,\})\d{3})+(?![\d,])")


@dataclass(frozen=True)
class Normalized:
    text: str
    percent: bool = False


def _unwrap(s: str) -> str:
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
    s = _unwrap(s)
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
    if s.count("=") == 1 and "\\" not in s.split("=")[1][:1]:
        s = _LHS.sub("", s, count=1)
    s = _THOUSANDS.sub(lambda m: m.group(0).replace("{,}", "").replace(",", ""), s)
    return Normalized(s.strip(), percent)


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
