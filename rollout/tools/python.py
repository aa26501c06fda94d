"""The `python` tool: the policy's code runs in the code reward's sandbox (rewards/code/sandbox.py: its own
namespaces, no network, the host's files out of view, cgroup or rlimit limits), as a script; its stdout comes
back, or on an error the last line of its stderr."""

from __future__ import annotations

import time

from rewards.code import sandbox
from rollout.tools import ToolLimits, ToolResult, register_tool

OUTPUT_BYTES = 64 << 10  # the program is killed past this much output; the text is cut to tokens later


@register_tool("python")
def python_tool(code: str, limits: ToolLimits) -> ToolResult:
    t = time.monotonic()
    box = sandbox.Limits(wall_s=limits.wall_s, cpu_s=limits.cpu_s, memory_mb=limits.memory_mb, output_bytes=OUTPUT_BYTES)
    try:
        r = sandbox.run_sandboxed({"kind": "stdio", "program": code}, limits=box)
    except sandbox.SandboxFailure as e:
        return ToolResult(f"sandbox error: {e}", "failed", time.monotonic() - t)
    return result_of(r, limits, time.monotonic() - t)


def result_of(r: sandbox.RunResult, limits: ToolLimits, wall_s: float) -> ToolResult:
    """The context's text for a finished program: its stdout when it succeeded; else what ended it, with the last
    line of its stderr (the exception), after whatever it printed."""
    out = r.stdout.decode("utf-8", "replace")
    if r.timed_out:
        return ToolResult(out + f"TimeoutError: the code ran past {limits.wall_s:g} s", "timeout", wall_s)
    if r.returncode == 0 and not r.output_capped:
        return ToolResult(out, "ok", wall_s)
    lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
    why = "output too long" if r.output_capped else (lines[-1] if lines else f"exit code {r.returncode}")
    return ToolResult(out + why, "error", wall_s)
