"""An example tool of a third-party package: `rollout.tools.name: purerl_plugin_example.tools:word_count`. It runs
no code (nothing to sandbox): it counts the words of what the policy wrote in the block."""

from rollout.tools import ToolLimits, ToolResult


def word_count(code: str, limits: ToolLimits) -> ToolResult:
    return ToolResult(f"{len(code.split())}\n", "ok")
