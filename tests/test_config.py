"""Config: typed schema, YAML + dotted overrides, and clear errors naming the bad key."""

import pytest

from rl.config import ConfigError, load_config


def test_tiny_yaml_loads_with_overrides():
    cfg = load_config("configs/tiny.yaml", ["rollout.n=4", "trainer.lr=1e-5", "algo.dual_clip=3"])
    assert cfg.rollout.n == 4
    assert cfg.trainer.lr == pytest.approx(1e-5)
    assert cfg.algo.dual_clip == 3.0 and isinstance(cfg.algo.dual_clip, float)
    assert [(t.verifier, t.weight) for t in cfg.reward.terms] == [("math", 1.0), ("format", 0.1)]


@pytest.mark.parametrize(
    "override, needle",
    [
        ("rollout.nn=4", "'rollout.nn'"),
        ("bogus.key=1", "'bogus'"),
        ("rollout.n=abc", "rollout.n"),
        ("trainer.steps=1.5", "trainer.steps"),
        ("model.dtype=float64", "model.dtype"),
        ("algo.kl_estimator=k9", "algo.kl_estimator"),
        ("rollout.n=1", "rollout.n"),
        ("reward.accuracy_verifier=code", "reward.accuracy_verifier"),
        ("rollout.engine_threads=-1", "rollout.engine_threads"),
        ("trainer.sharding=zero3", "trainer.sharding"),
        ("trainer.sharding=fsdp", "trainer.sharding=fsdp needs trainer.ranks > 1"),
    ],
)
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_config("configs/tiny.yaml", [override])
    assert needle in str(e.value)


def test_unknown_key_in_yaml_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"'trainer\.stepz'"):
        load_config(bad)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/does_not_exist.yaml")


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/tiny.yaml", ["rollout.n"])
