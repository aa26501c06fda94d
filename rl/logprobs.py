"""Per-token logprobs and entropy of a causal LM on given tokens: the trainer's side of every ratio."""

from __future__ import annotations

import torch


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logps (B, L-1) of input_ids[:, 1:], and the entropy (B, L-1) of each next-token distribution.

    Logits are divided by the sampling temperature so the logprobs are those of the distribution
    the engine sampled from.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float() / temperature  # (B, L-1, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    logps = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, L-1)
    return logps, entropy


@torch.no_grad()
def batched_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                     micro_batch_size: int) -> torch.Tensor:
    """token_logprobs without gradients, in micro-batches; (B, L-1)."""
    out = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)
    for s in range(0, input_ids.shape[0], micro_batch_size):
        lp, _ = token_logprobs(model, input_ids[s : s + micro_batch_size], attention_mask[s : s + micro_batch_size], temperature)
        out[s : s + micro_batch_size] = lp
    return out
