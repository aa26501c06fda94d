"""MoE-aware training: router statistics from the trainer's forward pass, and router freezing.

transformers' MoE models return one router-logit tensor per MoE layer when called with
`output_router_logits=True`: (N, E) over the N = B * L positions of the batch, padding included.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# Router weights across transformers' MoE families: `mlp.gate.weight` (Qwen2/3-MoE, OLMoE, DeepSeek),
# `block_sparse_moe.gate.weight` (Mixtral); `gate_proj` / `gate_up_proj` are expert weights, not routers.
ROUTER_PARAM = re.compile(r"(^|\.)(mlp|block_sparse_moe)\.(gate|router)\.(weight|bias|e_score_correction_bias)$")


def router_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if ROUTER_PARAM.search(n)]


def freeze_router(model) -> int:
    """Stops gradients into every router; returns how many parameter tensors were frozen."""
    params = router_parameters(model)
    if not params:
        raise ValueError("moe.freeze_router: the policy has no router parameters (is it an MoE model?)")
    for _, p in params:
        p.requires_grad_(False)
    return len(params)


def router_counts(router_logits: tuple[Tensor, ...], token_mask: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Per-layer tokens per expert (L, E) and summed router entropy (L,) over the positions in token_mask (N,).

    An expert's load counts each token once per layer if it is among the token's top-k experts.
    """
    counts, entropy = [], []
    keep = token_mask.reshape(-1).bool()
    for logits in router_logits:
        logits = logits.detach().float()[keep]  # (n, E)
        probs = torch.softmax(logits, dim=-1)
        chosen = logits.topk(top_k, dim=-1).indices  # (n, k)
        counts.append(torch.bincount(chosen.reshape(-1), minlength=logits.shape[-1]).float())
        entropy.append(-(probs * torch.log(probs.clamp_min(1e-20))).sum())
    return torch.stack(counts), torch.stack(entropy)


def router_metrics(counts: Tensor, entropy_sum: Tensor, num_tokens: int) -> dict[str, float]:
    """`moe/*` metrics from per-layer expert counts (L, E) and summed router entropy (L,) over num_tokens tokens.

    - expert_load_cv: std / mean of tokens per expert (0 = perfectly balanced), averaged over layers;
    - max_load_ratio: the busiest expert's load over the mean load (1 = balanced, E / k = one expert takes all);
    - router_entropy: mean entropy (nats) of the router's softmax per token;
    - dead_experts: (layer, expert) pairs that received no token.
    Per-layer values go to `moe/layer{i}/...`.
    """
    mean = counts.mean(dim=-1).clamp_min(1e-12)  # (L,)
    cv = counts.std(dim=-1, unbiased=False) / mean  # (L,)
    max_ratio = counts.max(dim=-1).values / mean  # (L,)
    ent = entropy_sum / max(num_tokens, 1)  # (L,)
    dead = (counts == 0).sum(dim=-1)  # (L,)
    out = {
        "moe/expert_load_cv": float(cv.mean()),
        "moe/max_load_ratio": float(max_ratio.max()),
        "moe/router_entropy": float(ent.mean()),
        "moe/dead_experts": int(dead.sum()),
    }
    for i in range(counts.shape[0]):
        out[f"moe/layer{i}/expert_load_cv"] = float(cv[i])
        out[f"moe/layer{i}/max_load_ratio"] = float(max_ratio[i])
        out[f"moe/layer{i}/router_entropy"] = float(ent[i])
        out[f"moe/layer{i}/dead_experts"] = int(dead[i])
    return out


def top_k_of(model) -> int | None:
    """Experts per token of an MoE model's config, None for a dense model."""
    cfg = model.config
    for name in ("num_experts_per_tok", "moe_top_k", "top_k"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return None
