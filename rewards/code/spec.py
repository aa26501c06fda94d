"""Code test references: the verifier's three kinds, and the public conventions that are read into them.

Kinds (what the sandbox runs): `stdio` {cases: [{input, output}]}, `call` {fn_name, cases: [{args, output}]},
`check` {test, entry_point} (HumanEval's `def check(candidate)`). Read into them, as a dict or its JSON text:
- APPS / TACO / PRIME (`reward_model.ground_truth`): {inputs, outputs} stdio lists, or with `fn_name` call tests;
- CodeContests: {input, output} lists;
- MBPP: {test_list: [assert ...], test_setup_code}.
`to_spec` raises ValueError saying what is wrong; nothing malformed reaches the sandbox.
"""

from __future__ import annotations

import json
import re
from typing import Any

KINDS = ("stdio", "call", "check")
_ASSERT_CALL = re.compile(r"^\s*assert\b[\s(]*([A-Za-z_]\w*)\s*\(")


def to_spec(value: Any) -> dict:
    """The canonical reference of `value` (a dict or its JSON text), checked."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, got {type(value).__name__}")
    if "kind" in value:
        return _checked(value)
    if "inputs" in value or "outputs" in value:
        return from_io_lists(value.get("inputs"), value.get("outputs"), value.get("fn_name"))
    if "input" in value or "output" in value:
        return from_io_lists(value.get("input"), value.get("output"))
    if "test_list" in value:
        return from_asserts(value["test_list"], value.get("test_setup_code") or "")
    if "test" in value:
        return _checked({"kind": "check", "test": value["test"], "entry_point": value.get("entry_point")})
    raise ValueError(f"needs 'kind' ({', '.join(KINDS)}), 'inputs'/'outputs' lists (APPS, TACO, PRIME), "
                     f"'input'/'output' (CodeContests), 'test_list' (MBPP) or 'test' and 'entry_point' "
                     f"(HumanEval); got keys {sorted(value)[:8]}")


def looks_like_code(value: Any) -> bool:
    """Whether a ground truth is a code reference in one of the conventions (a JSON object with their keys)."""
    if isinstance(value, str):
        if not value.lstrip().startswith("{"):
            return False
        try:
            value = json.loads(value)
        except ValueError:
            return False
    keys = {"kind", "inputs", "outputs", "input", "output", "test_list", "fn_name", "entry_point"}
    return isinstance(value, dict) and bool(keys & set(value))


def from_io_lists(inputs: Any, outputs: Any, fn_name: Any = None) -> dict:
    """APPS' `input_output`: stdio strings, or with fn_name one argument list per call. APPS wraps call outputs
    in a list (`[5]` for 5) and its harness accepts either, so does this reference (`unwrap_outputs`)."""
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise ValueError("'inputs' and 'outputs' must both be lists")
    if not inputs or len(inputs) != len(outputs):
        raise ValueError(f"needs as many outputs as inputs, at least one (got {len(inputs)} and {len(outputs)})")
    if fn_name is not None:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise ValueError(f"'fn_name' must be a function name, got {fn_name!r:.60}")
        if not all(isinstance(args, list) for args in inputs):
            raise ValueError("with 'fn_name', each input must be a list of arguments")
        cases = [{"args": args, "output": out} for args, out in zip(inputs, outputs)]
        return {"kind": "call", "fn_name": fn_name, "cases": cases, "unwrap_outputs": True}
    cases = [{"input": _text(i, "input"), "output": _text(o, "output")} for i, o in zip(inputs, outputs)]
    return {"kind": "stdio", "cases": cases}


def from_asserts(asserts: Any, setup: str = "") -> dict:
    """MBPP: `assert f(...) == ...` lines become one HumanEval-style check; the entry point is the called name."""
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) and a.strip() for a in asserts):
        raise ValueError("'test_list' must be a non-empty list of assert statements")
    called = _ASSERT_CALL.match(asserts[0])
    if called is None:
        raise ValueError(f"'test_list' must start with `assert name(...)`, got {asserts[0]!r:.80}")
    if not isinstance(setup, str):
        raise ValueError("'test_setup_code' must be text")
    body = "".join(f"    {line.strip()}\n" for line in asserts)
    return _checked({"kind": "check", "test": f"{setup}\n\ndef check(candidate):\n{body}", "entry_point": called.group(1)})


def _text(value: Any, what: str) -> str:
    """A stdio stream: text, or a list of lines (TACO)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "".join(line + "\n" for line in value)
    raise ValueError(f"each stdio {what} must be text or a list of lines, got {value!r:.60}")


def _checked(spec: dict) -> dict:
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"'kind' must be one of {KINDS}, got {kind!r:.40}")
    if kind == "check":
        if not (isinstance(spec.get("test"), str) and spec["test"].strip()):
            raise ValueError("a check reference needs the 'test' code")
        if not (isinstance(spec.get("entry_point"), str) and spec["entry_point"].isidentifier()):
            raise ValueError("a check reference needs 'entry_point', the function's name")
        return spec
    cases = spec.get("cases")
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"a {kind} reference needs a non-empty 'cases' list")
    need = ("input", "output") if kind == "stdio" else ("args", "output")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or any(k not in case for k in need):
            raise ValueError(f"case {i} must hold {need}")
        if kind == "stdio" and not (isinstance(case["input"], str) and isinstance(case["output"], str)):
            raise ValueError(f"case {i}: stdio input and output must be text")
        if kind == "call" and not isinstance(case["args"], list):
            raise ValueError(f"case {i}: 'args' must be a list")
    if kind == "call" and not (isinstance(spec.get("fn_name"), str) and spec["fn_name"].isidentifier()):
        raise ValueError("a call reference needs 'fn_name', the function's name")
    return spec


def call_passes(spec: dict, expected: Any, got: Any, equal) -> bool:
    """One call case: `got` equals `expected`, or APPS' wrapped form `[got]` where the spec allows it."""
    if equal(got, expected):
        return True
    return bool(spec.get("unwrap_outputs")) and isinstance(expected, list) and len(expected) == 1 and equal(got, expected[0])
