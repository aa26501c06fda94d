"""Exact evaluation of purely numeric answers (integers, decimals, e-notation, fractions, powers, factorials).

This is the fast path (no sympy) and the guard against lossy float comparison of huge or tiny numbers.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_BITS = 1 << 20  # ~315k decimal digits: exact arithmetic above this is refused, not approximated
MAX_FACTORIAL = 20_000
MAX_DIGITS = 20_000  # longer literals are compared as text: int(str) is quadratic and capped by CPython
MAX_TOKENS = 300  # no plain numeric answer is longer; it keeps the recursive parser and evaluator shallow


class NotExact(Exception):
    """The expression is not a plain numeric expression (has symbols, roots, functions...)."""


class TooLarge(Exception):
    """The expression is numeric but too large to evaluate exactly within budget."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|(?P<frac>\\[dt]?frac)|(?P<binom>\\[dt]?binom)|(?P<op>\\cdot|\\times|\\div|[-+*/^!(){}]))"
)


def tokenize(s: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of a plain numeric expression; NotExact for anything else, or over MAX_TOKENS."""
    out, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise NotExact(s[pos : pos + 20])
        if len(out) == MAX_TOKENS:
            raise NotExact("too many tokens")  # 1-1-1-... a thousand times would exceed Python's recursion limit
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return out


class _Parser:
    """Recursive descent over tokens into a tuple AST: ("num", Fraction) | (op, child, ...)."""

    def __init__(self, tokens):
        self.t, self.i = tokens, 0

    def peek(self):
        return self.t[self.i][1] if self.i < len(self.t) else None

    def take(self, want=None):
        if self.i >= len(self.t) or (want is not None and self.t[self.i][1] != want):
            raise NotExact(f"expected {want!r}")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.i != len(self.t):
            raise NotExact("trailing tokens")
        return node

    def expr(self):
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            node = ("add" if op == "+" else "sub", node, self.term())
        return node

    def term(self):
        node = self.unary()
        while self.peek() in ("*", "/", "\\cdot", "\\times", "\\div"):
            op = self.take()[1]
            node = ("div" if op in ("/", "\\div") else "mul", node, self.unary())
        return node

    def unary(self):
        if self.peek() == "-":
            self.take()
            return ("neg", self.unary())
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return ("pow", base, self.unary())  # right-associative: 9^9^9 = 9^(9^9)
        return base

    def postfix(self):
        node = self.atom()
        while self.peek() == "!":
            self.take()
            node = ("fact", node)
        return node

    def atom(self):
        if self.i >= len(self.t):
            raise NotExact("unexpected end")
        kind, val = self.take()
        if kind == "num":
            return ("num", val)
        if kind == "frac":
            return ("div", self.group(), self.group())
        if kind == "binom":
            return ("binom", self.group(), self.group())
        if val in ("(", "{"):
            node = self.expr()
            self.take(")" if val == "(" else "}")
            return node
        raise NotExact(f"unexpected {val!r}")

    def group(self):
        if self.peek() == "{":
            self.take()
            node = self.expr()
            self.take("}")
            return node
        kind, val = self.take()  # \frac12 form: one digit per argument
        if kind != "num" or not val.isdigit():
            raise NotExact("bad \\frac argument")
        if len(val) == 1:
            return ("num", val)
        self.t.insert(self.i, ("num", val[1:]))  # \frac12 -> \frac{1}{2}: the rest is the next argument
        return ("num", val[0])


def parse(s: str):
    """Tuple AST of a plain numeric expression; raises NotExact otherwise."""
    return _Parser(tokenize(s)).parse()


def literal(text: str) -> Fraction:
    """Exact value of a decimal literal like 12, 0.5, 1.5e-3, refusing absurd sizes."""
    mant, _, exp = text.lower().partition("e")
    digits = len(mant) - ("." in mant)
    exponent = int(exp) if exp else 0
    if digits > MAX_DIGITS or abs(exponent) > MAX_DIGITS:
        raise TooLarge("literal")
    whole, _, frac = mant.partition(".")
    value = Fraction(_int(whole + frac), 10 ** len(frac))
    return value * Fraction(10) ** exponent


def _int(digits: str) -> int:
    # CPython refuses int() on strings over 4300 digits; chunking keeps the cost bounded and explicit.
    value = 0
    for i in range(0, len(digits), 4000):
        chunk = digits[i : i + 4000]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


def _bits(x: Fraction) -> int:
    return max(x.numerator.bit_length(), x.denominator.bit_length())


def evaluate(node) -> Fraction:
    """Exact value; raises TooLarge before doing work that would exceed MAX_BITS, NotExact if irrational."""
    op = node[0]
    if op == "num":
        return literal(node[1])
    if op == "neg":
        return -evaluate(node[1])
    if op == "fact":
        n = evaluate(node[1])
        if n.denominator != 1 or n < 0:
            raise NotExact("factorial of a non-natural number")
        if n > MAX_FACTORIAL:
            raise TooLarge("factorial")
        return Fraction(math.factorial(int(n)))
    if op == "binom":
        n, k = evaluate(node[1]), evaluate(node[2])
        if n.denominator != 1 or k.denominator != 1 or n < 0:
            raise NotExact("binomial of non-natural numbers")
        if k < 0 or k > n:
            return Fraction(0)
        if min(k, n - k) * max(1, int(n).bit_length()) > MAX_BITS:  # log2 C(n, k) <= min(k, n-k) * log2(n)
            raise TooLarge("binomial")
        return Fraction(math.comb(int(n), int(k)))
    if op == "pow":
        base = evaluate(node[1])
        exp = _eval_exponent(node[2])
        if exp.denominator != 1:
            raise NotExact("fractional exponent")
        if base in (0, 1) or exp == 0:
            return Fraction(1) if exp == 0 else base
        if base == -1:
            return Fraction(-1 if exp.numerator % 2 else 1)
        if abs(exp.numerator) * _bits(base) > MAX_BITS:
            raise TooLarge("power")
        return base ** int(exp)
    a, b = evaluate(node[1]), evaluate(node[2])
    if max(_bits(a), _bits(b)) > MAX_BITS:
        raise TooLarge("operand")
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if b == 0:
        raise NotExact("division by zero")
    return a / b


def _eval_exponent(node) -> Fraction:
    # An exponent that is itself too large to compute means the power is too large: no need to compute it.
    try:
        return evaluate(node)
    except TooLarge as e:
        raise TooLarge("exponent") from e


def canonical(node) -> str:
    """Structural form used to compare expressions too large to evaluate (exact text of the tree)."""
    if node[0] == "num":
        mant, _, exp = node[1].lower().partition("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        return (mant.lstrip("0") or "0") + (f"e{int(exp)}" if exp and int(exp) else "")
    return node[0] + "(" + ",".join(canonical(c) for c in node[1:]) + ")"
