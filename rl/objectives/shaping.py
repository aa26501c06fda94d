"""Reward shaping before the advantages: DAPO's overlong handling (arXiv:2503.14476) and the KL penalty taken in
the reward instead of the loss. All take and return (P, G) rewards and valid masks."""

from __future__ import annotations

import torch
from torch import Tensor

from rl.objectives.kl import kl_penalty


def overlong_buffer_ok(buffer_len: int, max_len: int) -> bool:
    """The one rule for DAPO's length buffer: 0 < L_cache <= L_max (checked by the config and the penalty)."""
    return 0 < buffer_len <= max_len


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (arXiv:2503.14476, eq. 13) for response lengths (N,) -> (N,) float.

    0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache in the buffer; -1 if |y| > L_max; all
    scaled by `penalty`. It is added to the task reward.
    """
    if not overlong_buffer_ok(buffer_len, max_len):
        raise ValueError(f"need 0 < buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    start = max_len - buffer_len  # L_max - L_cache
    lengths = lengths.to(torch.float32)  # (N,)
    in_buffer = (start - lengths) / buffer_len  # ((L_max - L_cache) - |y|) / L_cache
    r_len = torch.where(lengths <= start, torch.zeros_like(lengths), in_buffer)
    r_len = torch.where(lengths > max_len, torch.full_like(lengths, -1.0), r_len)  # -1 past L_max
    return penalty * r_len


def apply_overlong(total: Tensor, valid: Tensor, lengths: Tensor, truncated: Tensor, algo, max_len: int,
                   ) -> tuple[Tensor, Tensor]:
    """Rewards and valid mask (P, G) after `algo.overlong` (an AlgoConfig); lengths, truncated: (P, G).

    `mask`: truncated samples (cut at max_len, no natural end) leave the loss and the group statistics.
    `soft`: DAPO's length penalty (algo.overlong_buffer, algo.overlong_penalty) is added to every reward.
    `none`: unchanged.
    """
    if algo.overlong == "mask":
        return total, valid & ~truncated
    if algo.overlong == "soft":
        r_len = overlong_penalty(lengths.reshape(-1), max_len, algo.overlong_buffer, algo.overlong_penalty)
        return total + r_len.view_as(total), valid
    return total, valid


def sequence_kl(sampler_logps: Tensor, ref_logps: Tensor, mask: Tensor, estimator: str) -> Tensor:
    """Summed per-token KL of each sequence (B,), from the sampler's logprobs (the policy the tokens came from)
    to the reference's, over the tokens in mask (B, T)."""
    return torch.where(mask, kl_penalty(sampler_logps, ref_logps, estimator), 0.0).sum(-1)  # sum_t k(t)
