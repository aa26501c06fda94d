"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.batch.build import build_tokens
from rl.trainer.forward import Scoring, batched_logprobs
from rl.trainer.micro import MicroBatching
from rollout.types import RolloutGroup


@torch.no_grad()
def max_logprob_gap(model, groups: list[RolloutGroup], pad_id: int, scoring: Scoring,
                    micro: MicroBatching | None = None) -> float:
    """max |logp_engine - logp_trainer| over every sampled token of `groups`, scored as the trainer's updates score
    them (`scoring`: its temperature, packing and head; `micro`: its micro-batches)."""
    tokens = build_tokens(groups, pad_id)
    was_training = model.training
    model.eval()
    batches = (micro or MicroBatching()).batches(tokens.attention_mask.sum(1).tolist())
    logps = batched_logprobs(model, tokens.input_ids, tokens.attention_mask, scoring, batches, tokens.response_mask)
    model.train(was_training)
    gap = torch.where(tokens.response_mask, (logps - tokens.sampler_logps).abs(), 0.0)
    return float(gap.max())
