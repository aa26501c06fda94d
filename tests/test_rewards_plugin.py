"""Third-party verifiers: the example package in tests/plugin_example, by dotted path and by entry point.

The entry-point tests do not pip-install the example package: they replace the installed entry points of
group `purerl.verifiers` (monkeypatching `rewards.registry._installed`) with EntryPoint objects that point
into it, which is what installing its pyproject.toml would declare."""

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from rewards import ENTRY_POINT_GROUP, get_verifier, list_verifiers, registry, score_batch

EXAMPLE_DIR = Path(__file__).parent / "plugin_example"
MODULE = "purerl_plugin_example.verifiers"


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.fixture
def plugin(monkeypatch):
    """The example package on sys.path, and a registry that forgets what the test registers."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    registry._load_builtins()  # before the copy: built-ins register once per process
    monkeypatch.setattr(registry, "VERIFIERS", registry.VERIFIERS.copy())
    monkeypatch.setattr(registry, "_ENTRY_POINT_PATHS", dict(registry._ENTRY_POINT_PATHS))

    def install(*eps):
        monkeypatch.setattr(registry, "_installed", lambda: registry._by_name(eps))

    return install


def test_pyproject_declares_the_entry_points():
    text = (EXAMPLE_DIR / "pyproject.toml").read_text()
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in text
    assert f'exact_answer = "{MODULE}:exact_answer"' in text


def test_entry_point_resolves_and_scores_in_workers(plugin):
    plugin(ep("exact_answer", f"{MODULE}:exact_answer"), ep("short_answer", f"{MODULE}:short_answer"))
    fn = get_verifier("exact_answer")
    assert fn.__module__ == MODULE and fn("<answer>4</answer>", "4").status == "ok"
    assert get_verifier("short_answer").name == "max_words(5)"
    assert {"exact_answer", "short_answer", "math"} <= set(list_verifiers())
    # The workers have no such entry point installed: the pool sends them the dotted path instead.
    assert registry.portable_ref("exact_answer") == f"{MODULE}:exact_answer"
    out = score_batch([("exact_answer", "<answer>4</answer>", "4", {}), ("short_answer", "<answer>a b c d e f</answer>", None, {})],
                      workers=2)
    assert [(r.score, r.status) for r in out] == [(1.0, "ok"), (0.0, "wrong")]


def test_unknown_name_lists_entry_points(plugin):
    plugin(ep("exact_answer", f"{MODULE}:exact_answer"))
    with pytest.raises(KeyError, match="known: code, exact_answer, format, math"):
        get_verifier("exact")


def test_entry_point_cannot_take_a_builtin_name(plugin):
    plugin(ep("math", f"{MODULE}:exact_answer"))
    with pytest.raises(ValueError, match="verifier name 'math': already registered"):
        get_verifier("math")
    assert get_verifier("code").__name__ == "code_verifier"  # other names still work


def test_two_entry_points_with_one_name_are_rejected(plugin):
    plugin(ep("exact_answer", f"{MODULE}:exact_answer"), ep("exact_answer", f"{MODULE}:short_answer"))
    with pytest.raises(ValueError, match="declared by several entry points"):
        get_verifier("exact_answer")


def test_dotted_path_reaches_workers_started_before_it_was_importable(plugin):
    score_batch([("math", "\\boxed{1}", "1", {})], workers=2)  # workers already running, without EXAMPLE_DIR
    out = score_batch([(f"{MODULE}:exact_answer", "<answer>yes</answer>", "YES", {})] * 3, workers=2)
    assert [r.status for r in out] == ["ok"] * 3
