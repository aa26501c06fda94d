"""rl/tasks/build.py: which embedded model a config needs, and when a built one is stale (its recipe changed)."""

import json

from rl.tasks import build


def test_embedded_paths_map_to_their_recipes():
    assert build.recipe_for("models/tiny-moe-base").out == "models/tiny-moe-base"
    assert build.recipe_for("./models/tiny-code-base").out == "models/tiny-code-base"
    assert build.recipe_for("Qwen/Qwen3-30B-A3B") is None and not build.ensure("Qwen/Qwen3-30B-A3B")


def test_a_model_is_current_only_with_its_recipes_fingerprint(tmp_path):
    recipe = build.recipe_for("models/tiny-code-base")
    assert not recipe.is_built(tmp_path)  # nothing there
    (tmp_path / "purerl_base.json").write_text(json.dumps({"recipe_sha": "0" * 64}))
    assert not recipe.is_built(tmp_path)  # made by another version of the recipe
    (tmp_path / "purerl_base.json").write_text(json.dumps({"recipe_sha": recipe.fingerprint()}))
    assert recipe.is_built(tmp_path)
    other = build.recipe_for("models/tiny-moe-base")
    assert other.fingerprint() != recipe.fingerprint() and not other.is_built(tmp_path)


def test_the_shipped_default_is_current():
    """make base-model builds it before the tests; a recipe edit without a rebuild would show here."""
    assert build.recipe_for("models/tiny-moe-base").is_built(build.Path("models/tiny-moe-base"))
