"""Per-token logprobs and entropy of a causal LM on given tokens: the trainer's side of every ratio."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from rl.batch.types import micro_slices
from rl.trainer.packing import plan


@dataclass
class Forward:
    logps: torch.Tensor  # (B, L-1) logprob of input_ids[:, 1:]
    entropy: torch.Tensor | None = None  # (B, L-1) entropy of each next-token distribution (detached)
    router_logits: tuple[torch.Tensor, ...] | None = None  # per MoE layer, (B * L, E)
    aux_loss: torch.Tensor | None = None  # the model's load-balancing loss (unweighted)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, with_router: bool = False, pack: bool = False) -> Forward:
    """One forward pass. Logits are divided by the sampling temperature so the logprobs are those of the
    distribution the engine sampled from. `with_router` also returns the MoE router logits and aux loss.
    `pack` lays the right-padded rows end to end first (rl/packing.py); the outputs keep the padded layout.
    """
    packing = plan(attention_mask) if pack else None
    aux_fn = _aux_loss_fn(model) if packing is not None and with_router else None
    if packing is None or (with_router and aux_fn is None):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                    **({"output_router_logits": True} if with_router else {}))
        logps, entropy = _next_token(out.logits, input_ids, temperature, with_entropy)
        if not with_router:
            return Forward(logps, entropy)
        return Forward(logps, entropy, out.router_logits, getattr(out, "aux_loss", None))
    b = input_ids.shape[0]
    ids = packing.pack(input_ids)
    out = model(input_ids=ids, position_ids=packing.position_ids, use_cache=False,
                **({"output_router_logits": True} if with_router else {}))
    scores = packing.rows, packing.width  # (R, C-1) per-slot results, padded to (R, C) and laid back out
    logps, entropy = (None if x is None else torch.nn.functional.pad(x, (0, 1)).view(scores)
                      for x in _next_token(out.logits, ids, temperature, with_entropy))
    target = attention_mask[:, 1:].bool()  # column t scores token t + 1
    logps = torch.where(target, packing.unpack(logps, b)[:, :-1], 0.0)
    if entropy is not None:
        entropy = torch.where(target, packing.unpack(entropy, b)[:, :-1], 0.0)
    if not with_router:
        return Forward(logps, entropy)
    router = tuple(packing.unpack(x.view(*scores, -1), b).reshape(-1, x.shape[-1]) for x in out.router_logits)
    aux = aux_fn(router, model.num_experts, model.num_experts_per_tok, attention_mask)  # padding left out, as unpacked
    return Forward(logps, entropy, router, aux)


def _next_token(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float, with_entropy: bool):
    """(B, L-1) logprob of each next token, and the entropy of each next-token distribution (detached)."""
    logp_all = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)  # (B, L-1, V)
    logps = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    if not with_entropy:
        return logps, None
    with torch.no_grad():
        return logps, -(logp_all.exp() * logp_all).sum(-1)


def _aux_loss_fn(model):
    """The model family's `load_balancing_loss_func` (transformers' MoE families each define one), or None."""
    if not hasattr(model, "num_experts_per_tok"):
        return None
    for cls in type(model).__mro__:  # FSDP wraps the class in a subclass of its own
        fn = getattr(sys.modules.get(cls.__module__), "load_balancing_loss_func", None)
        if fn is not None:
            return fn
    return None


@torch.no_grad()
def batched_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                     micro_batch_size: int, pack: bool = False) -> torch.Tensor:
    """token_logprobs without gradients, in micro-batches on the model's device; (B, L-1) on the CPU."""
    out = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)
    device = next(model.parameters()).device
    for s, e, w in micro_slices(attention_mask, micro_batch_size):  # each trimmed to the padding it needs
        ids, mask = input_ids[s:e, :w].to(device), attention_mask[s:e, :w].to(device)
        out[s:e, : w - 1] = token_logprobs(model, ids, mask, temperature, pack=pack).logps.float().cpu()
    return out
