"""Config: typed schema, YAML + dotted overrides, and clear errors naming the bad key."""

import pytest

from rl.config import ConfigError, load_config


def test_tiny_yaml_loads_with_overrides():
    cfg = load_config("configs/tiny.yaml", ["rollout.n=4", "trainer.lr=1e-5", "algo.loss.dual_clip=3"])
    assert cfg.rollout.n == 4
    assert cfg.trainer.lr == pytest.approx(1e-5)
    assert cfg.algo.loss.name == "ppo_clip"
    assert cfg.algo.loss.dual_clip == 3.0 and isinstance(cfg.algo.loss.dual_clip, float)
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
        ("reward.sandbox.min_isolation=none", "reward.sandbox.min_isolation"),
        ("reward.sandbox.packages=[numpyy]", "reward.sandbox.packages ['numpyy'] not importable here"),
        ("trainer.max_tokens_per_micro_batch=-1", "trainer.max_tokens_per_micro_batch"),
        ("trainer.logprob_chunk_tokens=-8", "trainer.logprob_chunk_tokens"),
        ("algo.entropy_coef=-0.1", "algo.entropy_coef"),
        ("rollout.tools.name=calculator", "rollout.tools.name unknown tool 'calculator'; valid names: python, silent"),
        ("rollout.tools.name=nopkg.tools:f", "tool 'nopkg.tools:f' cannot be loaded (ModuleNotFoundError"),
        ("rollout.tools.max_calls=0", "rollout.tools.max_calls"),
    ],
)
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_config("configs/tiny.yaml", [override])
    assert needle in str(e.value)


def test_objective_by_name_or_with_its_settings(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["algo.loss=gspo", "algo.loss.clip_high=4e-4"])
    assert (cfg.algo.loss.name, cfg.algo.loss.clip_low, cfg.algo.loss.clip_high) == ("gspo", 0.2, 4e-4)
    yaml = tmp_path / "x.yaml"
    yaml.write_text("algo:\n  loss: {name: cispo, clip_low: 1.0}\n")
    cfg = load_config(yaml, ["algo.loss.clip_high=0.3"])  # an override merges into the YAML's settings
    assert (cfg.algo.loss.name, cfg.algo.loss.clip_low, cfg.algo.loss.clip_high) == ("cispo", 1.0, 0.3)
    with pytest.raises(ConfigError, match=r"unknown config key 'algo\.loss\.dual_clip'; valid keys here: name, clip_low"):
        load_config(yaml, ["algo.loss.dual_clip=3"])  # cispo's weight is clipped already: it takes no dual clip
    # the resolved config records the objective's name and every setting, and loads back the same
    from rl.config import to_yaml

    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))
    assert load_config(again) == cfg


def test_code_built_config_is_checked():
    from rl.config import AlgoConfig, Config, RolloutConfig

    with pytest.raises(ConfigError, match="algo.epochs must be >= 1|epochs must be >= 1"):
        AlgoConfig(epochs=0)
    with pytest.raises(ConfigError, match="algo.overlong_buffer must be in 1..rollout.max_new_tokens"):
        Config(algo=AlgoConfig(overlong="soft", overlong_buffer=65), rollout=RolloutConfig(max_new_tokens=64))


def test_reward_terms_have_their_own_time_limits():
    cfg = load_config("configs/tiny.yaml", ["reward.terms=[{verifier: math, weight: 1.0, timeout_s: 3}]"])
    assert cfg.reward.terms[0].timeout_s == 3.0
    assert load_config("configs/tiny.yaml").reward.terms[0].timeout_s is None  # the verifier's own limit
    with pytest.raises(ConfigError, match=r"reward.terms\[0\].timeout_s must be > 0"):
        load_config("configs/tiny.yaml", ["reward.terms=[{verifier: math, timeout_s: 0}]"])


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


def test_a_bare_off_reads_as_the_choice_not_a_bool():
    """YAML 1.1 reads `off` as False: a Literal key with an "off" choice takes it as that choice."""
    cfg = load_config("configs/tiny.yaml", ["trainer.mixed_precision=off", "moe.routing_replay=off"])
    assert cfg.trainer.mixed_precision == "off" and cfg.moe.routing_replay == "off"
    with pytest.raises(ConfigError, match="trainer.mixed_precision"):
        load_config("configs/tiny.yaml", ["trainer.mixed_precision=on"])  # no "on" choice: still an error
