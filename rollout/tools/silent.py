"""The `silent` tool: the control of a tool run. It runs nothing and gives back an empty output, so a policy trained
with it has the ritual of a call (the block, the stop, the output's frame) without its result: what it learns over
a run with `python` is what the output is worth."""

from __future__ import annotations

from rollout.tools import ToolLimits, ToolResult, register_tool


@register_tool("silent")
def silent_tool(code: str, limits: ToolLimits) -> ToolResult:
    return ToolResult("", "ok")
