"""TrainBatch layout: response tokens, sampler logprobs and masks line up with the targets they score."""

import torch

from rl.batch import build_batch
from rollout.types import Completion, RolloutGroup


def test_alignment_padding_and_invalid_mask():
    g = RolloutGroup(prompt_index=7, prompt_ids=[5, 6, 7])
    g.completions = [Completion([8, 9], "a", [-0.5, -0.25], "stop"), Completion([10], "b", [-1.0], "length")]
    adv = torch.tensor([[1.0, -1.0]])
    valid = torch.tensor([[True, False]])
    b = build_batch([g], adv, valid, pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 10, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # column t scores input_ids[:, t+1]: the response starts at column len(prompt) - 1 = 2
    assert b.mask.tolist() == [[False, False, True, True], [False, False, False, False]]
    assert b.old_logps.tolist() == [[0, 0, -0.5, -0.25], [0, 0, -1.0, 0]]
    assert b.advantages.tolist() == [1.0, -1.0]
    assert b.response_lengths.tolist() == [2, 1]
    s = b.slice(1, 2)
    assert s.input_ids.tolist() == [[5, 6, 7, 10]] and s.mask.shape == (1, 3)


def test_zero_std_frac_counts_groups_without_signal():
    from rl.scoring import zero_std_frac

    total = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.2, 0.5]])
    valid = torch.tensor([[True, True, True], [True, True, True], [True, False, True]])
    # row 0 equal, row 1 varies, row 2 equal once the masked 0.2 is dropped
    assert zero_std_frac(total, valid) == 2 / 3
