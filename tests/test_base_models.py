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


def test_the_deepseek_recipe_builds_the_architecture_vllm_cpu_runs(tmp_path):
    """models/tiny-dsv3-base: DeepSeek-V3 with the MLA head vLLM's CPU kernel compiles for, and the config keys
    vLLM needs to create the routing bias, kept through a save (docs/deepseek.md)."""
    from transformers import AutoConfig

    recipe = build.recipe_for("models/tiny-dsv3-base")
    assert recipe.fingerprint() != build.recipe_for("models/tiny-moe-base").fingerprint()
    model = recipe.architecture(64, 0)
    c = model.config
    assert c.model_type == "deepseek_v3" and c.kv_lora_rank + c.qk_rope_head_dim == 576
    assert (c.n_group, c.topk_group, c.n_shared_experts, c.first_k_dense_replace) == (2, 1, 1, 1)
    model.save_pretrained(tmp_path)
    saved = AutoConfig.from_pretrained(tmp_path)
    assert (saved.topk_method, saved.scoring_func) == ("noaux_tc", "sigmoid")
