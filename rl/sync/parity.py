"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.batch.build import build_tokens
from rl.trainer.forward import Scoring, batched_logprobs
from rl.trainer.micro import MicroBatching
from rollout.types import RolloutGroup

# The sync check's thresholds on the mean gap, set from measurement (make bf16-gap, docs/objectives.md "bf16"): in
# fp32 a correct sync's mean gap is ~1e-6 and one missed update's ~6e-3; in bf16 a correct sync's is up to 6e-3 and
# one missed update at lr 1e-3 gives 6e-2 or more. The max is no check: one token whose router sits on a near-tie
# reaches 2.4e-2 in a correct fp32 sync (the larger bench model at 1024 tokens) and 0.24 in bf16.
FP32_MEAN_GAP = 1e-4
BF16_MEAN_GAP = 2e-2


def in_parity(gaps: dict[str, float], bf16: bool) -> bool:
    """Whether logprob_gaps' figures are those of a correct sync: the mean gap under the threshold of the engines'
    precision."""
    return gaps["mean"] < (BF16_MEAN_GAP if bf16 else FP32_MEAN_GAP)


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
