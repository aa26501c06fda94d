"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.batch.build import build_tokens
from rl.trainer.forward import Scoring, batched_logprobs
from rl.trainer.micro import MicroBatching
from rollout.types import RolloutGroup


@torch.no_grad()
def logprob_gaps(model, groups: list[RolloutGroup], pad_id: int, scoring: Scoring,
                 micro: MicroBatching | None = None) -> dict[str, float]:
    """mean and max of |logp_engine - logp_trainer| over every sampled token of `groups`, scored as the trainer's
    updates score them (`scoring`: its temperature, packing and head; `micro`: its micro-batches)."""
    tokens = build_tokens(groups, pad_id)
    was_training = model.training
    model.eval()
    batches = (micro or MicroBatching()).batches(tokens.attention_mask.sum(1).tolist())
    logps = batched_logprobs(model, tokens.input_ids, tokens.attention_mask, scoring, batches, tokens.response_mask)
    model.train(was_training)
    gap = (logps.float() - tokens.sampler_logps)[tokens.response_mask].abs()
    return {"mean": float(gap.mean()), "max": float(gap.max())}


def max_logprob_gap(model, groups: list[RolloutGroup], pad_id: int, scoring: Scoring,
                    micro: MicroBatching | None = None) -> float:
    """The fp32 sync check's figure: the largest gap on any sampled token (logprob_gaps)."""
    return logprob_gaps(model, groups, pad_id, scoring, micro)["max"]
