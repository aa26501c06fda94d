"""The typed batches between the stages: the padded tokens of scored rollout groups, and the TrainBatch the
policy update consumes. Rows are group-major: the G samples of prompt p are rows p*G ... p*G+G-1.

Per-token tensors are aligned to targets: column t scores token input_ids[:, t + 1], so they have L - 1 columns,
where L is the padded length of prompt + response.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenBatch:
    """B = P * G sampled sequences, right-padded, with what the sampler reported about them."""

    input_ids: torch.Tensor  # (B, L) long, right-padded
    attention_mask: torch.Tensor  # (B, L) long
    response_mask: torch.Tensor  # (B, L-1) bool: the response tokens of every sample
    sampler_logps: torch.Tensor  # (B, L-1) vLLM's logprobs of the sampled tokens, 0 elsewhere
    response_lengths: torch.Tensor  # (B,) long
    truncated: torch.Tensor  # (B,) bool: cut at rollout.max_new_tokens, no natural end
    sampler_experts: torch.Tensor | None = None  # (B, L, layers, k) experts the engine routed each input position to

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass(frozen=True)
class TrainBatch:
    """Everything one policy update needs, complete when built (rl.batch.prepare), never changed after."""

    input_ids: torch.Tensor  # (B, L) long, right-padded
    attention_mask: torch.Tensor  # (B, L) long
    mask: torch.Tensor  # (B, L-1) bool: response tokens of valid samples
    old_logps: torch.Tensor  # (B, L-1) the ratio's denominator: sampler logprobs, or the trainer's (algo.old_logprobs)
    advantages: torch.Tensor  # (B,)
    response_lengths: torch.Tensor  # (B,) long
    ref_logps: torch.Tensor | None = None  # (B, L-1) reference logprobs when algo.kl_coef > 0
    sampler_logps: torch.Tensor | None = None  # (B, L-1) vLLM's logprobs of the sampled tokens, 0 elsewhere
    is_weight: torch.Tensor | None = None  # (B, L-1) truncated importance weight min(pi_trainer / pi_sampler, C)
    routed_experts: torch.Tensor | None = None  # (B, L, layers, k) experts to replay in the update (moe.routing_replay)
    sampler_experts: torch.Tensor | None = None  # (B, L, layers, k) experts the engine routed each input position to

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> TrainBatch:
        """The same batch on `device` (itself when it is there already)."""
        if self.input_ids.device == device:
            return self
        return TrainBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                             for f in dataclasses.fields(self)})

    def slice(self, start: int, end: int) -> TrainBatch:
        """Rows [start, end), trimmed to the longest sequence they hold."""
        return self.select(torch.arange(start, min(end, len(self))))

    def select(self, rows: torch.Tensor) -> TrainBatch:
        """The rows at these indices (ascending), trimmed to the longest sequence they hold."""
        rows = rows.to(self.input_ids.device)
        width = trimmed_width(self.attention_mask[rows])

        def take(x: torch.Tensor | None, cols: int) -> torch.Tensor | None:
            return None if x is None else x[rows, :cols]

        return TrainBatch(
            input_ids=take(self.input_ids, width),
            attention_mask=take(self.attention_mask, width),
            mask=take(self.mask, width - 1),
            old_logps=take(self.old_logps, width - 1),
            advantages=self.advantages[rows],
            response_lengths=self.response_lengths[rows],
            ref_logps=take(self.ref_logps, width - 1),
            sampler_logps=take(self.sampler_logps, width - 1),
            is_weight=take(self.is_weight, width - 1),
            routed_experts=take(self.routed_experts, width),
            sampler_experts=take(self.sampler_experts, width),
        )

    def lengths(self) -> list[int]:
        """Tokens (prompt + response) of each row."""
        return self.attention_mask.sum(1).tolist()


def trimmed_width(attention_mask: torch.Tensor) -> int:
    """Columns that rows (b, w) of right-padded sequences need: their longest length."""
    return int(attention_mask.sum(1).max())
