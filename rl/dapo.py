"""DAPO's two data-side helpers: dynamic-sampling group filter and soft overlong length penalty (arXiv:2503.14476)."""

from __future__ import annotations

import torch
from torch import Tensor


def filter_uniform_groups(rewards: Tensor, valid: Tensor) -> Tensor:
    """Keep-mask (P,) for dynamic sampling from rewards, valid (P, G) (DAPO, arXiv:2503.14476, Sec. 3.2).

    A group whose valid rewards are all equal has zero advantage everywhere and only dilutes the batch; a group
    with fewer than 2 valid samples has no baseline. Both are dropped.
    """
    valid = valid.bool()
    r_max = torch.where(valid, rewards, torch.full_like(rewards, -torch.inf)).amax(dim=-1)  # (P,)
    r_min = torch.where(valid, rewards, torch.full_like(rewards, torch.inf)).amin(dim=-1)  # (P,)
    return (valid.sum(dim=-1) >= 2) & (r_max > r_min)


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (arXiv:2503.14476, eq. 13) for response lengths (N,) -> (N,) float.

    0 if |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache in the buffer; -1 if |y| > L_max; all
    scaled by `penalty`. It is added to the task reward.
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    start = max_len - buffer_len  # L_max - L_cache
    lengths = lengths.to(torch.float32)  # (N,)
    in_buffer = (start - lengths) / buffer_len  # ((L_max - L_cache) - |y|) / L_cache
    r_len = torch.where(lengths <= start, torch.zeros_like(lengths), in_buffer)
    r_len = torch.where(lengths > max_len, torch.full_like(lengths, -1.0), r_len)  # -1 past L_max
    return penalty * r_len


def apply_overlong(mode: str, total: Tensor, valid: Tensor, lengths: Tensor, truncated: Tensor, *, max_len: int,
                   buffer_len: int, penalty: float) -> tuple[Tensor, Tensor]:
    """Rewards and valid mask (P, G) after the overlong policy; lengths, truncated: (P, G).

    `mask`: truncated samples (cut at max_len, no natural end) leave the loss and the group statistics.
    `soft`: DAPO's length penalty is added to every reward. `none`: unchanged.
    """
    if mode == "mask":
        return total, valid & ~truncated
    if mode == "soft":
        return total + overlong_penalty(lengths.reshape(-1), max_len, buffer_len, penalty).view_as(total), valid
    return total, valid
