"""The shape of the tree that docs/README's layout promises: rl/ is stage folders plus its entry points and
shared types, and no function in rl/ grows past 50 lines or 7 parameters."""

import ast
from pathlib import Path

RL = Path(__file__).parent.parent / "rl"
TOP_LEVEL = {"__init__.py", "train.py", "evaluate.py", "config.py", "errors.py", "registry.py", "families.py"}
STAGES = {"data", "collect", "batch", "objectives", "trainer", "sync", "run", "tasks"}


def test_rl_is_stage_folders_and_entry_points():
    assert {p.name for p in RL.glob("*.py")} == TOP_LEVEL
    assert {p.name for p in RL.iterdir() if p.is_dir() and p.name != "__pycache__"} == STAGES
    for stage in STAGES:
        assert (RL / stage / "__init__.py").is_file(), stage


def _parameters(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_long_functions_or_long_signatures_in_rl():
    found = []
    for path in sorted(RL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines, params = node.end_lineno - node.lineno + 1, _parameters(node)
                if lines > 50 or params > 7:
                    found.append(f"{path.relative_to(RL.parent)}:{node.name} ({lines} lines, {params} parameters)")
    assert found == []
