"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.batch.build import build_tokens
from rl.trainer.forward import Scoring, batched_logprobs
from rl.trainer.micro import MicroBatching
from rollout.types import RolloutGroup

# The sync check's thresholds, set from measurement (make bf16-gap, docs/objectives.md "bf16"): in fp32 the largest
# gap of a correct sync is ~1e-5 and one missed update's ~0.2; in bf16 a correct sync's mean gap is up to 6e-3 (its
# max up to 0.24, so the max cannot be the check) and one missed update at lr 1e-3 gives a mean of 6e-2 or more.
FP32_MAX_GAP = 1e-3
BF16_MEAN_GAP = 2e-2


def in_parity(gaps: dict[str, float], bf16: bool) -> bool:
    """Whether logprob_gaps' figures are those of a correct sync: the max under fp32, the mean under bf16."""
    return gaps["mean"] < BF16_MEAN_GAP if bf16 else gaps["max"] < FP32_MAX_GAP


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
