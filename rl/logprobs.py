"""Per-token logprobs and entropy of a causal LM on given tokens: the trainer's side of every ratio."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Forward:
    logps: torch.Tensor  # (B, L-1) logprob of input_ids[:, 1:]
    entropy: torch.Tensor | None = None  # (B, L-1) entropy of each next-token distribution (detached)
    router_logits: tuple[torch.Tensor, ...] | None = None  # per MoE layer, (B * L, E)
    aux_loss: torch.Tensor | None = None  # the model's load-balancing loss (unweighted)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, with_router: bool = False) -> Forward:
    """One forward pass. Logits are divided by the sampling temperature so the logprobs are those of the
    distribution the engine sampled from. `with_router` also returns the MoE router logits and aux loss.
    """
    kwargs = {"output_router_logits": True} if with_router else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logits = out.logits[:, :-1].float() / temperature  # (B, L-1, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    logps = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, L-1)
    if not with_router:
        return Forward(logps, entropy)
    return Forward(logps, entropy, out.router_logits, getattr(out, "aux_loss", None))


@torch.no_grad()
def batched_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                     micro_batch_size: int) -> torch.Tensor:
    """token_logprobs without gradients, in micro-batches; (B, L-1)."""
    out = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)
    for s in range(0, input_ids.shape[0], micro_batch_size):
        e = s + micro_batch_size
        width = int(attention_mask[s:e].sum(1).max())  # trim the padding these rows do not need
        out[s:e, : width - 1] = token_logprobs(model, input_ids[s:e, :width], attention_mask[s:e, :width], temperature).logps
    return out
