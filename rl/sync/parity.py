"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.batch.build import build_tokens
from rl.trainer.forward import batched_logprobs
from rollout.types import RolloutGroup


@torch.no_grad()
def max_logprob_gap(model, groups: list[RolloutGroup], temperature: float, pad_id: int, pack: bool = False) -> float:
    """max |logp_engine - logp_trainer| over every sampled token of `groups` (`pack`: the trainer's forward packs
    the sequences, as in its updates)."""
    tokens = build_tokens(groups, pad_id)
    was_training = model.training
    model.eval()
    logps = batched_logprobs(model, tokens.input_ids, tokens.attention_mask, temperature, micro_batch_size=32, pack=pack)
    model.train(was_training)
    gap = torch.where(tokens.response_mask, (logps - tokens.sampler_logps).abs(), 0.0)
    return float(gap.max())
