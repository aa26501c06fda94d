"""The typed batch the policy update consumes, built from scored rollout groups."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rollout.types import RolloutGroup


@dataclass
class TrainBatch:
    """B = P * G sequences (group-major: the G samples of prompt p are rows p*G ... p*G+G-1).

    Per-token tensors are aligned to targets: column t scores token input_ids[:, t + 1], so they have
    L - 1 columns, where L is the padded length of prompt + response.
    """

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

    def slice(self, start: int, end: int) -> TrainBatch:
        """Rows [start, end), trimmed to the longest sequence they hold."""
        width = int(self.attention_mask[start:end].sum(1).max())
        return TrainBatch(
            input_ids=self.input_ids[start:end, :width],
            attention_mask=self.attention_mask[start:end, :width],
            mask=self.mask[start:end, : width - 1],
            old_logps=self.old_logps[start:end, : width - 1],
            advantages=self.advantages[start:end],
            response_lengths=self.response_lengths[start:end],
            ref_logps=_cols(self.ref_logps, start, end, width),
            sampler_logps=_cols(self.sampler_logps, start, end, width),
            is_weight=_cols(self.is_weight, start, end, width),
            routed_experts=None if self.routed_experts is None else self.routed_experts[start:end, :width],
            sampler_experts=None if self.sampler_experts is None else self.sampler_experts[start:end, :width],
        )


def _cols(x: torch.Tensor | None, start: int, end: int, width: int) -> torch.Tensor | None:
    return None if x is None else x[start:end, : width - 1]


def build_batch(groups: list[RolloutGroup], advantages: torch.Tensor, valid: torch.Tensor, pad_id: int) -> TrainBatch:
    """Pads prompt + completion per sample. advantages, valid: (P, G); invalid samples get an empty mask."""
    seqs = [(g.prompt_ids, c) for g in groups for c in g.completions]
    B = len(seqs)
    L = max(len(p) + len(c.token_ids) for p, c in seqs)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L - 1), dtype=torch.bool)
    old_logps = torch.zeros((B, L - 1), dtype=torch.float32)
    lengths = torch.zeros(B, dtype=torch.long)
    flat_valid = valid.reshape(-1)  # (P*G,)
    for i, (prompt, c) in enumerate(seqs):
        p, r = len(prompt), len(c.token_ids)
        input_ids[i, :p] = torch.tensor(prompt)
        input_ids[i, p : p + r] = torch.tensor(c.token_ids)
        attention_mask[i, : p + r] = 1
        # the response token at position p + j is predicted at column p + j - 1
        old_logps[i, p - 1 : p - 1 + r] = torch.tensor(c.logprobs, dtype=torch.float32)
        mask[i, p - 1 : p - 1 + r] = bool(flat_valid[i])
        lengths[i] = r
    return TrainBatch(input_ids, attention_mask, mask, old_logps, advantages.reshape(-1).float(), lengths,
                      sampler_logps=old_logps.clone(), sampler_experts=_sampler_experts(seqs, L))


def _sampler_experts(seqs, L: int) -> torch.Tensor | None:
    """(B, L, layers, k) long from each completion's captured routing (all fed positions; the last token is never
    fed, so its row stays 0 and is never used); None unless every completion has it."""
    routed = [c.routed_experts for _, c in seqs]
    if any(r is None for r in routed):
        return None
    out = torch.zeros((len(seqs), L, *routed[0].shape[1:]), dtype=torch.long)
    for i, r in enumerate(routed):
        out[i, : r.shape[0]] = r.long()
    return out
