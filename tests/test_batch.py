"""The batch stage: response tokens, sampler logprobs and masks line up with the targets they score, and
`prepare_batch` builds a complete TrainBatch from scored groups."""

import torch

from rl.batch.build import build_tokens
from rl.batch.prepare import TrainerForwards, prepare_batch
from rl.collect.scoring import ScoredGroups, reward_metrics
from rl.config import load_config
from rollout.types import Completion, RolloutGroup


def group() -> RolloutGroup:
    g = RolloutGroup(prompt_index=7, prompt_ids=[5, 6, 7])
    g.completions = [Completion([8, 9], "a", [-0.5, -0.25], "stop"), Completion([10], "b", [-1.0], "length")]
    return g


def test_token_alignment_and_padding():
    t = build_tokens([group()], pad_id=0)
    assert t.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 10, 0]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # column t scores input_ids[:, t+1]: the response starts at column len(prompt) - 1 = 2
    assert t.response_mask.tolist() == [[False, False, True, True], [False, False, True, False]]
    assert t.sampler_logps.tolist() == [[0, 0, -0.5, -0.25], [0, 0, -1.0, 0]]
    assert t.response_lengths.tolist() == [2, 1] and t.truncated.tolist() == [False, True]


def test_prepare_masks_invalid_samples_and_fills_every_field():
    cfg = load_config("configs/tiny.yaml", ["rollout.n=2", "algo.advantage=dr_grpo"])
    scored = ScoredGroups(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]]), {}, {})
    b, metrics = prepare_batch(scored, build_tokens([group()], 0), TrainerForwards(), cfg)
    assert b.mask.tolist() == [[False, False, True, True], [False, False, False, False]]
    assert b.old_logps.tolist() == [[0, 0, -0.5, -0.25], [0, 0, -1.0, 0]]
    assert b.advantages.tolist() == [0.0, 0.0]  # dr_grpo: one valid sample, mean 1 -> 1 - 1 = 0; invalid -> 0
    assert b.response_lengths.tolist() == [2, 1] and metrics == {}
    assert b.routed_experts is None and b.is_weight is None and b.ref_logps is None
    s = b.slice(1, 2)
    assert s.input_ids.tolist() == [[5, 6, 7, 10]] and s.mask.shape == (1, 3)


def test_prepare_overlong_mask_and_kl_in_reward():
    cfg = load_config("configs/tiny.yaml", ["rollout.n=2", "algo.overlong=mask", "algo.kl_in_reward=true",
                                            "algo.kl_estimator=k1", "algo.kl_coef=0.5", "algo.advantage=dr_grpo"])
    scored = ScoredGroups(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, True]]), {}, {})
    ref = torch.tensor([[0, 0, -1.0, -0.25], [0, 0, 0.0, 0]])
    b, metrics = prepare_batch(scored, build_tokens([group()], 0), TrainerForwards(ref_logps=ref), cfg)
    # sample 1 ran out of tokens: masked. Sample 0: k1 = (-0.5 - -1) + (-0.25 - -0.25) = 0.5, penalty 0.5 * 0.5
    assert b.mask[1].sum() == 0 and metrics["reward/kl_penalty"] == 0.25
    assert b.advantages.tolist() == [0.0, 0.0]  # the only valid sample is its own baseline


def test_zero_std_frac_counts_groups_without_signal():
    total = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.2, 0.5]])
    valid = torch.tensor([[True, True, True], [True, True, True], [True, False, True]])
    # row 0 equal, row 1 varies, row 2 equal once the masked 0.2 is dropped
    scored = ScoredGroups(total, valid, {}, {})
    assert scored.has_signal().tolist() == [False, True, False]
    assert reward_metrics(scored, "math")["reward/zero_std_frac"] == 2 / 3
