"""The "code" verifier: run the response's program in the sandbox on the reference's tests; score = pass rate.

Reference kinds: stdio (stdin -> stdout), call (function / `class Solution` method on JSON args) and check
(HumanEval style `check(candidate)`), or APPS / CodeContests / MBPP tests read into them (rewards/code/spec.py).
Expected outputs stay in this process: the sandbox reports what the program produced and the comparison happens
here. `answer_key` lets `score_batch` run a program once for all the items of a batch that hold it with the same
tests and arguments: a group's samples often do.
"""

from __future__ import annotations

import functools
import json
import math
import re

from rewards.code import sandbox
from rewards.code.sandbox import Limits, RunResult, detect_isolation
from rewards.code.spec import call_passes, to_spec
from rewards.registry import register_verifier
from rewards.types import Reward

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n", re.IGNORECASE)


def extract_program(response: str) -> str:
    """The last ```python block (bare ``` blocks if none is tagged); an unclosed final fence runs to the end."""
    opens = list(_OPEN_FENCE.finditer(response))
    if opens and response.find("```", opens[-1].end()) == -1:
        return response[opens[-1].end() :]  # the model ran out of tokens before closing the fence
    blocks = _FENCE.findall(response)
    tagged = [body for lang, body in blocks if lang]
    if tagged:
        return tagged[-1]
    return blocks[-1][1] if blocks else response


def json_equal(a, b) -> bool:
    """Strict JSON equality: types must match (bool is not a number); int/float compare with 1e-9 tolerance."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return a == b


def voted_program(program: str) -> str:
    """The program as maj@k counts votes: identical code up to trailing whitespace and blank lines."""
    return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()  # the final newline of print() is not a line of output
    return lines


def _validate(spec) -> dict:
    try:
        return to_spec(spec)
    except ValueError as e:
        raise ValueError(f"the reference {e}") from None


def _why(r: RunResult) -> str:
    if r.timed_out:
        return "time limit"
    if r.output_capped:
        return "output limit"
    tail = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {r.returncode}"]
    return tail[0][:300]


def _run_cases(spec: dict, program: str, limits: Limits, reuse: bool) -> tuple[list[bool], str]:
    """Pass/fail per case, and the first failure's reason."""
    run_sandboxed = functools.partial(sandbox.run_sandboxed, reuse=reuse)
    kind = spec["kind"]
    if kind == "stdio":
        passed, why = [], ""
        for case in spec["cases"]:
            r = run_sandboxed({"kind": "stdio", "program": program}, stdin=case["input"].encode(), limits=limits)
            ok = r.returncode == 0 and not (r.timed_out or r.output_capped)
            ok = ok and _lines(r.stdout.decode("utf-8", "replace")) == _lines(case["output"])
            passed.append(ok)
            why = why or ("" if ok else _why(r) if r.returncode != 0 or r.timed_out else "wrong output")
        return passed, why
    if kind == "call":
        args = [case["args"] for case in spec["cases"]]
        r = run_sandboxed({"kind": "call", "program": program, "fn_name": spec["fn_name"], "cases": args}, limits=limits)
        got = {rec["case"]: rec for rec in r.records if isinstance(rec.get("case"), int)}
        passed = []
        for i, case in enumerate(spec["cases"]):
            rec = got.get(i, {})
            try:
                passed.append("result" in rec and call_passes(spec, case["output"], json.loads(rec["result"]), json_equal))
            except ValueError:
                passed.append(False)
        load_error = next((rec["load_error"] for rec in r.records if "load_error" in rec), "")
        why = load_error or next((got[i].get("error", "wrong result") for i in got if not passed[i]), "") or _why(r)
        return passed, why
    r = run_sandboxed({"kind": "check", "program": program, "entry_point": spec["entry_point"], "test": spec["test"]}, limits=limits)
    ok = any(rec.get("passed") is True for rec in r.records)
    why = "" if ok else next((rec.get("error") or rec.get("load_error") for rec in r.records), "") or _why(r)
    return [ok], why


@register_verifier("code")
def code_verifier(
    response: str, reference, all_or_nothing: bool = False, time_limit_s: float = 5.0, memory_mb: int = 1024,
    reuse_sandbox: bool = True, **metadata
) -> Reward:
    """Fraction of test cases passed (1/0 with all_or_nothing). time_limit_s and memory_mb apply per program run;
    reuse_sandbox=False starts a sandbox of its own for every run instead of forking it from the worker's zygote."""
    try:
        spec = _validate(reference)
    except (ValueError, TypeError, KeyError) as e:
        return Reward.fail("error", reason=f"bad code reference: {e}")
    program = extract_program(response)
    if not program.strip():
        return Reward.fail("no_answer")
    # CPU time is a backstop a second past the wall clock, so that a busy single-threaded program is stopped (and
    # reported) by the wall clock; several threads can still run into it first
    limits = Limits(wall_s=time_limit_s, cpu_s=math.ceil(time_limit_s) + 1, memory_mb=memory_mb)
    try:
        passed, why = _run_cases(spec, program, limits, reuse_sandbox)
    except OSError as e:  # the sandbox itself failed to start: infrastructure, not a wrong program
        return Reward.fail("error", reason=f"sandbox failed: {e!r}")
    frac = sum(passed) / len(passed)
    info = {"passed": sum(passed), "total": len(passed), "isolation": detect_isolation().namespaces,
            "answer": voted_program(program)}
    if why and frac < 1:
        info["first_failure"] = why
    if frac == 1.0:
        return Reward.ok(**info)
    return Reward.wrong(0.0 if all_or_nothing else frac, **info)


def answer_key(response: str, reference, metadata: dict) -> str:
    """Items with equal keys score the same: the same program, tests and arguments (the reasoning around the
    program may differ). score_batch runs one of them."""
    tests = reference if isinstance(reference, str) else json.dumps(reference, sort_keys=True, default=str)
    return json.dumps([extract_program(response), tests, metadata], sort_keys=True, default=str)


code_verifier.timeout_s = 60.0  # default hard limit per item in score_batch: several sandboxed runs
code_verifier.answer_key = answer_key
