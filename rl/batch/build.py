"""Rollout groups -> the padded TokenBatch: prompt + completion per sample, with the sampler's logprobs. Tokens a
tool wrote are in the sequence (context) but not in the response mask, nor in the response's length."""

from __future__ import annotations

import torch

from rl.batch.types import TokenBatch
from rollout.types import Completion, RolloutGroup


def build_tokens(groups: list[RolloutGroup], pad_id: int) -> TokenBatch:
    """Pads prompt + completion of every sample of `groups` (group-major rows)."""
    seqs = [(g.prompt_ids, c) for g in groups for c in g.completions]
    B = len(seqs)
    L = max(len(p) + len(c.token_ids) for p, c in seqs)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    response = torch.zeros((B, L - 1), dtype=torch.bool)
    logps = torch.zeros((B, L - 1), dtype=torch.float32)
    lengths = torch.zeros(B, dtype=torch.long)
    for i, (prompt, c) in enumerate(seqs):
        p, r = len(prompt), len(c.token_ids)
        input_ids[i, :p] = torch.tensor(prompt)
        input_ids[i, p : p + r] = torch.tensor(c.token_ids)
        attention_mask[i, : p + r] = 1
        # the response token at position p + j is predicted at column p + j - 1
        logps[i, p - 1 : p - 1 + r] = torch.tensor(c.logprobs, dtype=torch.float32)
        # tool output (rollout/tools) is context, not trained on: the loss, KL, entropy and TIS see sampled tokens
        response[i, p - 1 : p - 1 + r] = True if c.tool_mask is None else torch.tensor(c.tool_mask, dtype=torch.bool)
        lengths[i] = c.generated
    truncated = torch.tensor([c.finish_reason == "length" for _, c in seqs])
    return TokenBatch(input_ids, attention_mask, response, logps, lengths, truncated,
                      _sampler_experts([c for _, c in seqs], L))


def _sampler_experts(completions: list[Completion], L: int) -> torch.Tensor | None:
    """(B, L, layers, k) long from each completion's captured routing (all fed positions; the last token is never
    fed, so its row stays 0 and is never used); None unless every completion has it."""
    routed = [c.routed_experts for c in completions]
    if any(r is None for r in routed):
        return None
    out = torch.zeros((len(routed), L, *routed[0].shape[1:]), dtype=torch.long)
    for i, r in enumerate(routed):
        out[i, : r.shape[0]] = r.long()
    return out
