"""The sync check: the engine's logprobs of its own samples against the trainer's, on the same tokens."""

from __future__ import annotations

import torch

from rl.logprobs import batched_logprobs
from rollout.types import RolloutGroup


@torch.no_grad()
def max_logprob_gap(model, groups: list[RolloutGroup], temperature: float, pad_id: int, pack: bool = False) -> float:
    """max |logp_engine - logp_trainer| over every sampled token of `groups` (`pack`: the trainer's forward packs
    the sequences, as in its updates)."""
    from rl.batch import build_batch

    P, G = len(groups), len(groups[0].completions)
    batch = build_batch(groups, torch.zeros(P, G), torch.ones(P, G, dtype=torch.bool), pad_id)
    was_training = model.training
    model.eval()
    logps = batched_logprobs(model, batch.input_ids, batch.attention_mask, temperature, micro_batch_size=32, pack=pack)
    model.train(was_training)
    gap = torch.where(batch.mask, (logps - batch.old_logps).abs(), 0.0)
    return float(gap.max())
