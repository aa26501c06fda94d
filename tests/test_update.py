"""The update loop (epochs x mini-batches), the rollout/trainer mismatch metrics, truncated IS and overlong handling.

Uses a random-init tiny Qwen3-MoE (real transformers model, no engine): these tests are about the trainer.
"""

import math

import pytest
import torch
from test_moe import tiny_moe

from rl.batch.types import TrainBatch
from rl.config import AlgoConfig, Config, ConfigError, MoeConfig, RolloutConfig, TrainerConfig, load_config
from rl.objectives.mismatch import mismatch_metrics, truncated_is_weight
from rl.objectives.shaping import apply_overlong
from rl.trainer.forward import Scoring, batched_logprobs
from rl.trainer.optim import make_optimizer
from rl.trainer.update import update


def batch_for(model, B=4, L=6, prompt=3):
    torch.manual_seed(1)
    ids = torch.randint(0, 32, (B, L))
    attn = torch.ones(B, L, dtype=torch.long)
    mask = torch.zeros(B, L - 1, dtype=torch.bool)
    mask[:, prompt - 1 :] = True
    old = batched_logprobs(model, ids, attn, Scoring(), [list(range(B))]) * mask
    return TrainBatch(ids, attn, mask, old, torch.tensor([1.0, -1.0, 1.0, -1.0]), mask.sum(1), sampler_logps=old.clone())


def settings(micro_batch_size: int, algo: AlgoConfig | None = None, moe: MoeConfig | None = None) -> Config:
    """A run config for these update tests: lr 1e-2, 3-token answers, the given micro-batches and objective."""
    return Config(algo=algo or AlgoConfig(), moe=moe or MoeConfig(), rollout=RolloutConfig(max_new_tokens=3),
                  trainer=TrainerConfig(micro_batch_size=micro_batch_size, lr=1e-2))


@pytest.mark.parametrize("epochs,mini,steps", [(1, 0, 1), (1, 2, 2), (2, 2, 4), (3, 4, 3)])
def test_update_counts_optimizer_steps_and_reports_pre_step_logps(epochs, mini, steps):
    model = tiny_moe()
    batch = batch_for(model)
    cfg = settings(1, AlgoConfig(epochs=epochs, mini_batch_size=mini))
    optim = make_optimizer(model, cfg.trainer)
    result = update(model, optim, batch, cfg)
    m, before, rows = result.metrics, result.before_logps, result.before_rows
    assert m["optimizer_steps"] == steps
    assert optim.scheduler.last_epoch == steps
    first = mini or 4
    assert rows.tolist() == [i < first for i in range(4)]
    # the forward before the first step saw the sampler's weights: the gap there is float noise
    gap = torch.where(batch.mask, before - batch.old_logps, 0.0)
    assert gap[rows].abs().max() < 1e-5
    # the old logprobs stay fixed across the epochs
    assert torch.equal(batch.old_logps, batch.sampler_logps)
    assert "moe/expert_load_cv" in m and m["moe/dead_experts"] >= 0


def test_aux_loss_is_added_and_reported():
    model = tiny_moe()
    batch = batch_for(model)
    cfg = settings(2, moe=MoeConfig(aux_loss_coef=0.5))
    m = update(model, make_optimizer(model, cfg.trainer), batch, cfg).metrics
    # Switch-style balance loss is E * sum_e f_e P_e summed over layers: >= num_layers (2) at best balance, 0 impossible
    assert m["moe/aux_loss"] > 0.5


def test_mismatch_metrics_hand_worked():
    trainer = torch.tensor([[-1.0, -2.0, 7.0]])
    sampler = torch.tensor([[-1.5, -2.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    m = mismatch_metrics(trainer, sampler, mask)
    assert m["rollout/logprob_abs_diff_mean"] == pytest.approx(0.25)
    assert m["rollout/logprob_abs_diff_max"] == pytest.approx(0.5)
    assert m["rollout/ppl_ratio"] == pytest.approx(math.exp(-1.5 - (-1.75)))


def test_truncated_is_weight_caps_and_ignores_masked():
    w = truncated_is_weight(torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -1.0, 0.0]]),
                            torch.tensor([[True, True, False]]), cap=1.5)
    assert w.flatten().tolist() == pytest.approx([1.5, math.exp(-1.0), 1.0])


def test_overlong_mask_and_soft():
    total = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    lengths = torch.tensor([[10, 64], [60, 50]])
    truncated = lengths == 64
    r, v = apply_overlong(total, valid, lengths, truncated, AlgoConfig(overlong="mask"), max_len=64)
    assert torch.equal(r, total) and v.tolist() == [[True, False], [True, True]]
    soft = AlgoConfig(overlong="soft", overlong_buffer=8, overlong_penalty=0.5)
    r, v = apply_overlong(total, valid, lengths, truncated, soft, max_len=64)
    # start of the buffer 56: 10 -> 0, 64 -> -1 * 0.5, 60 -> (56 - 60) / 8 * 0.5, 50 -> 0
    assert r.flatten().tolist() == pytest.approx([1.0, -0.5, 0.75, 1.0]) and torch.equal(v, valid)


@pytest.mark.parametrize("override,needle", [
    ("algo.tis_cap=2", "old_logprobs=trainer"),
    ("algo.loss=ppo", "algo.loss"),
    ("algo.loss.clip_low=-1", "algo.loss.clip_low must be >= 0"),
    ("algo.loss.dual_clip=0.5", "algo.loss.dual_clip must be > 1"),
    ("algo.advantage.eps=-1", "algo.advantage.eps"),
    ("algo.advantage=gae", "algo.advantage"),
    ("algo.loss_agg=sum", "algo.loss_agg"),
    ("algo.epochs=0", "algo.epochs"),
    ("algo.overlong=cut", "algo.overlong"),
    ("algo.kl_in_reward=true", "kl_coef"),
    ("moe.freeze=true", "moe.freeze"),
])
def test_objective_config_errors_name_the_key(override, needle):
    overrides = [override] + (["algo.kl_coef=0"] if "kl_in_reward" in override else [])
    with pytest.raises(ConfigError, match=needle):
        load_config("configs/tiny.yaml", overrides)
