"""Micro-batches by a token budget and ranks balanced by tokens (rl/trainer/micro.py): hand-worked plans, and one
update under a budget equal to the update with row micro-batches on a long-tailed batch."""

import math

import pytest
import torch
from test_moe import tiny_moe

from rl.batch.types import TrainBatch
from rl.config import AlgoConfig, Config, RolloutConfig, TrainerConfig
from rl.trainer.micro import MicroBatching, first_fit_decreasing, plan_ranks, split_by_tokens
from rl.trainer.optim import Optim, make_optimizer
from rl.trainer.update import update


def test_first_fit_decreasing_by_hand():
    lengths = [5, 9, 2, 7, 4, 12]
    # longest first, a bin costing rows x its first (longest) row. Budget 10: 12 alone (over it); 9 and 7 alone
    # (2 x 12, 2 x 9, 2 x 7 > 10); 5 new; 4 joins 5 (2 x 5 = 10); 2 fits nowhere (3 x 5 = 15).
    assert first_fit_decreasing(list(range(6)), lengths, 10) == [[5], [1], [3], [0, 4], [2]]
    # Budget 20: 7 joins 9 (18); 5 new; 4 and 2 join 5 (10, 15).
    assert first_fit_decreasing(list(range(6)), lengths, 20) == [[5], [1, 3], [0, 2, 4]]


def test_a_long_row_is_alone_and_similar_rows_share():
    lengths = [6000, 50, 60, 7000, 55]
    assert first_fit_decreasing(list(range(5)), lengths, 8192) == [[3], [0], [1, 2, 4]]


def test_rows_go_to_the_rank_with_fewest_tokens():
    # 9 -> rank 0; 7 -> rank 1; 5 -> rank 1 (7 < 9); 4 -> rank 0 (9 < 12); 1 -> rank 1 (12 < 13)
    assert split_by_tokens([4, 9, 1, 7, 5], 2) == [[0, 1], [2, 3, 4]]
    plan = plan_ranks([4, 9, 1, 7, 5], 2, MicroBatching(rows=2))
    assert plan.tokens == [13, 13] and plan.token_imbalance == 1.0
    assert plan.batches == [[[0, 1]], [[2, 3], [4]]] and plan.passes == 2 and plan.rows() == [[0, 1], [2, 3, 4]]


def test_row_micro_batches_keep_their_order_on_one_rank():
    plan = plan_ranks([3, 1, 4, 1, 5], 1, MicroBatching(rows=2))
    assert plan.batches == [[[0, 1], [2, 3], [4]]] and plan.token_imbalance == 1.0


def test_every_row_once_and_bins_under_the_budget():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 300, (200,), generator=g).tolist()
    plan = plan_ranks(lengths, 3, MicroBatching(max_tokens=512))
    assert sorted(r for part in plan.rows() for r in part) == list(range(200))
    for bins in plan.batches:
        for b in bins:
            assert len(b) * max(lengths[r] for r in b) <= 512
    assert plan.token_imbalance < 1.01  # 200 rows over 3 ranks: LPT leaves at most the last row's worth


def long_tailed_batch(rows=64, shortest=50, longest=8000, prompt=20, seed=0) -> TrainBatch:
    """`rows` answers whose lengths run log-uniformly from `shortest` to `longest` tokens, in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    answers = [round(shortest * (longest / shortest) ** (i / (rows - 1))) for i in range(rows)]
    answers = [answers[i] for i in torch.randperm(rows, generator=g).tolist()]
    lengths = torch.tensor(answers) + prompt
    width = int(lengths.max())
    attention = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.randint(0, 32, (rows, width), generator=g) * attention
    mask = (attention[:, 1:] == 1) & (torch.arange(width - 1) >= prompt - 1)
    old = torch.where(mask, -math.log(32) + 0.05 * torch.randn(rows, width - 1, generator=g), 0.0)
    return TrainBatch(ids, attention, mask, old, torch.randn(rows, generator=g), torch.tensor(answers),
                      sampler_logps=old.clone())


class RecordingOptim(Optim):
    """The real AdamW step, after keeping the gradients it is about to apply."""

    def step(self, params, grad_clip):
        self.grads = [p.grad.detach().clone() for p in params]
        return super().step(params, grad_clip)


def update_with(micro_batch_size: int, max_tokens: int, batch: TrainBatch):
    model = tiny_moe()
    cfg = Config(algo=AlgoConfig(loss_agg="seq_mean_token_mean"), rollout=RolloutConfig(max_new_tokens=8000),
                 trainer=TrainerConfig(micro_batch_size=micro_batch_size, max_tokens_per_micro_batch=max_tokens,
                                       lr=1e-3, logprob_chunk_tokens=512))
    optim = make_optimizer(model, cfg.trainer)
    optim = RecordingOptim(optim.optimizer, optim.scheduler)
    result = update(model, optim, batch, cfg)
    return result.metrics, optim.grads, dict(model.named_parameters())


def test_token_budget_update_equals_row_micro_batches():
    """64 answers of 50 to 8,000 tokens (104 k tokens): one row at a time against bins of 8,192 padded tokens."""
    batch = long_tailed_batch()
    rows, rows_grads, rows_params = update_with(1, 0, batch)
    budget, budget_grads, budget_params = update_with(1, 8192, batch)
    assert rows["trainer/micro_batches"] == 64 and budget["trainer/micro_batches"] == 18
    for key in ["loss/policy", "loss/clip_frac", "policy/entropy", "grad_norm"]:
        assert budget[key] == pytest.approx(rows[key], rel=1e-5, abs=1e-7), key
    for a, b in zip(budget_grads, rows_grads, strict=True):
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))
    for name, p in budget_params.items():
        assert float((p - rows_params[name]).detach().abs().max()) <= 1e-5, name
