"""Reduce a (B, T) per-token loss to the scalar that is backpropagated (DAPO, GRPO and Dr. GRPO normalisations).

Global counts let a mini-batch be split into micro-batches whose scalars sum to the full-batch value.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

AggMode = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
AGG_MODES: tuple[str, ...] = get_args(AggMode)


def count_seqs(mask: Tensor) -> int:
    """Number of sequences with at least one valid token; mask: (B, T)."""
    return int((mask.bool().sum(dim=-1) > 0).sum())


def count_tokens(mask: Tensor) -> int:
    """Number of valid tokens; mask: (B, T)."""
    return int(mask.bool().sum())


def aggregate(
    loss: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_seqs: int | None = None,
    num_tokens: int | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Scalar loss from per-token loss (B, T) and mask (B, T).

    Modes: `token_mean` (DAPO, arXiv:2503.14476): sum(loss) / num_tokens; `seq_mean_token_mean` (GRPO,
    arXiv:2402.03300): sum_i (sum_t loss_it / len_i) / num_seqs; `seq_mean_token_sum_norm` (Dr. GRPO,
    arXiv:2503.20783): sum(loss) / (num_seqs * max_len) with max_len a constant (e.g. the generation budget).
    num_seqs / num_tokens are the global counts of the whole mini-batch when it is split into micro-batches;
    None means the local counts (sequences with >= 1 valid token, valid tokens). Masked positions count nothing.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid modes: {', '.join(sorted(AGG_MODES))}")
    mask = mask.bool()
    loss = torch.where(mask, loss, torch.zeros_like(loss))  # (B, T), masked -> exactly 0
    if num_seqs is None:
        num_seqs = count_seqs(mask)
    if num_tokens is None:
        num_tokens = count_tokens(mask)
    if mode == "token_mean":
        return loss.sum() / max(num_tokens, 1)  # sum_it l_it / N_tok
    if mode == "seq_mean_token_mean":
        seq_len = mask.sum(dim=-1).clamp(min=1)  # (B,)
        return (loss.sum(dim=-1) / seq_len).sum() / max(num_seqs, 1)  # sum_i (sum_t l_it / |y_i|) / N_seq
    if max_len is None:
        raise ValueError("loss aggregation 'seq_mean_token_sum_norm' (Dr. GRPO) needs max_len")
    return loss.sum() / (max(num_seqs, 1) * max_len)  # sum_it l_it / (N_seq * L_max)
