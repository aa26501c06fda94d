"""Tools the policy calls mid-answer (tool-integrated reasoning): the registry and what a call returns.

A tool is a function `(code: str, limits: ToolLimits) -> ToolResult`, registered by name with
`@register_tool("python")`; it never raises into the rollout: a timeout, a crash or a refused syscall is a
ToolResult whose text says so. Built in: `python` (rollout/tools/python.py), which runs the code in the sandbox of
the code reward (rewards/code/sandbox.py), and `silent` (rollout/tools/silent.py), the control that runs nothing and
returns an empty output.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from rl.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class ToolLimits:
    """Per-call limits: wall time (the caller kills the call past it), CPU seconds and memory."""

    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512


@dataclass(frozen=True)
class ToolResult:
    """What a call gives back: the text put into the context, and how it ended."""

    text: str
    status: str  # "ok", "error" (the code raised or exited non-zero), "timeout", or "failed" (the tool itself)
    wall_s: float = 0.0


Tool = Callable[[str, ToolLimits], ToolResult]
TOOLS: Registry[Tool] = Registry("tool")


def register_tool(name: str) -> Callable[[Tool], Tool]:
    """Decorator: `@register_tool("python")`. A name can be registered only once."""
    return TOOLS.register(name)


def get_tool(name: str) -> Tool:
    """The registered tool, or the function at a dotted path `module:function` (a tool of your own, importable
    where the engines run: an installed package); an unknown name is an error listing the registered ones."""
    import rollout.tools.python  # noqa: F401 - the built-in tools register on import
    import rollout.tools.silent  # noqa: F401

    if ":" not in name:
        return TOOLS.get(name)
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownNameError(f"tool {name!r} cannot be loaded ({type(e).__name__}: {e}); a tool of your own is "
                               f"`module:function`, importable where the engines run; registered tools: "
                               f"{', '.join(TOOLS.names())}") from None


def call_tool(tool: Tool, code: str, limits: ToolLimits) -> ToolResult:
    """Runs one call; an exception of the tool itself becomes a `failed` result, never an error of the rollout."""
    try:
        return tool(code, limits)
    except Exception as e:  # noqa: BLE001 - a tool's failure is text in the context
        return ToolResult(f"tool error: {type(e).__name__}: {e}", "failed")
