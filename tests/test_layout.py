"""The shape of the tree that docs/README's layout promises: rl/ is stage folders plus its entry points and
shared types, and no function in rl/ grows past 50 lines or 7 parameters."""

import ast
from pathlib import Path

RL = Path(__file__).parent.parent / "rl"
TOP_LEVEL = {"__init__.py", "train.py", "evaluate.py", "config.py", "errors.py", "registry.py", "families.py",
             "storage.py"}
STAGES = {"data", "collect", "batch", "objectives", "trainer", "sync", "eval", "run", "tasks"}


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


def _uses_vllm(tree: ast.AST) -> bool:
    """Imports vLLM, or holds an engine (calls a vLLM method on one)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm"):
            return True
        if isinstance(node, ast.Import) and any(a.name.startswith("vllm") for a in node.names):
            return True
        if isinstance(node, ast.Attribute) and node.attr in ("collective_rpc", "llm_engine"):
            return True
    return False


def test_vllm_internals_stay_in_the_extension_folder():
    """Outside rollout/vllm_ext/, no file that uses vLLM reaches a leading-underscore attribute or hands
    `collective_rpc` a function: vLLM's worker is reached through the extension's named methods only."""
    found = []
    files = [*RL.rglob("*.py"), *(RL.parent / "rollout").rglob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text())
        if "vllm_ext" in path.parts or not _uses_vllm(tree):
            continue
        for node in ast.walk(tree):
            private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            rpc = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr == "collective_rpc"
                   and not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)))
            if private or rpc:
                found.append(f"{path.relative_to(RL.parent)}:{node.lineno}")
    assert found == []
