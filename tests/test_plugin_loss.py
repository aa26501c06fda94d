"""A loss with a hyperparameter of its own, added the way a researcher would: registered from this file with
its config dataclass, chosen and set from YAML, checked like every config value, and trained with by the real
update loop. Nothing outside this file knows about it."""

from dataclasses import dataclass

import pytest
import torch
from test_moe import tiny_moe
from test_update import batch_for

from rl.config import load_config
from rl.errors import ConfigError, require
from rl.objectives import LossInputs, LossOutput, ObjectiveConfig, register_loss
from rl.trainer.optim import make_optimizer
from rl.trainer.update import update


@dataclass
class ScaledPGConfig(ObjectiveConfig):
    name: str = "scaled_pg"
    beta: float = 1.0
    """Scale of the advantage: the loss is -beta * A * log pi."""

    def __post_init__(self):
        require(self.beta > 0, "beta", "must be > 0")


@register_loss("scaled_pg", config=ScaledPGConfig)
def scaled_pg(inp: LossInputs, cfg: ScaledPGConfig) -> LossOutput:
    """Plain REINFORCE with a scaled advantage; logps, mask (B, T), advantages (B,)."""
    per_token = -cfg.beta * inp.advantages.unsqueeze(-1) * inp.logps  # -beta * A * log pi
    return LossOutput(torch.where(inp.mask, per_token, 0.0))


def yaml_config(tmp_path, beta) -> str:
    path = tmp_path / "scaled.yaml"
    path.write_text(f"algo:\n  loss:\n    name: scaled_pg\n    beta: {beta}\n  kl_coef: 0.0\n"
                    "trainer:\n  micro_batch_size: 2\n  lr: 0.01\nrollout:\n  max_new_tokens: 3\n")
    return str(path)


def test_plugin_loss_is_configured_from_yaml_and_checked(tmp_path):
    cfg = load_config(yaml_config(tmp_path, 0.5))
    assert type(cfg.algo.loss) is ScaledPGConfig and cfg.algo.loss.beta == 0.5
    assert load_config(yaml_config(tmp_path, 0.5), ["algo.loss.beta=2"]).algo.loss.beta == 2.0
    with pytest.raises(ConfigError, match=r"algo\.loss\.beta must be > 0"):
        load_config(yaml_config(tmp_path, -1))
    with pytest.raises(ConfigError, match=r"unknown config key 'algo\.loss\.clip_low'; valid keys here: name, beta"):
        load_config(yaml_config(tmp_path, 0.5), ["algo.loss.clip_low=0.1"])


def test_plugin_loss_trains_with_its_value(tmp_path):
    model = tiny_moe()
    batch = batch_for(model)
    cfg = load_config(yaml_config(tmp_path, 0.5))
    logps = batch.old_logps  # the batch's old logprobs are the model's own: the loss before the step sees them
    # seq_mean_token_mean: mean over sequences of the token mean of -beta * A * log pi
    want = (-0.5 * batch.advantages[:, None] * logps * batch.mask).sum(1) / batch.mask.sum(1)
    result = update(model, make_optimizer(model, cfg.trainer), batch, cfg)
    assert result.metrics["loss/policy"] == pytest.approx(float(want.mean()), rel=1e-5)
    assert result.metrics["loss/clip_frac"] == 0.0 and result.metrics["optimizer_steps"] == 1
