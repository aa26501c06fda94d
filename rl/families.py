"""What purerl knows of the MoE model families it trains (Qwen2/3-MoE, OLMoE, DeepSeek, Mixtral): where their
routers sit and how many experts a token takes. Shared by the trainer and the engines' capture of routing, so
that "what is a router" is written once."""

from __future__ import annotations

ROUTER_MODULES = ("mlp.gate", "block_sparse_moe.gate")
"""Qualified-name suffixes of a router module: `mlp.gate` (Qwen2/3-MoE, OLMoE, DeepSeek), `block_sparse_moe.gate`
(Mixtral). `gate_proj` / `gate_up_proj` are expert weights, not routers."""


def is_router(module_name: str) -> bool:
    """True for the qualified name of a router module, in transformers' models and vLLM's alike."""
    return module_name.endswith(ROUTER_MODULES)


def top_k_of(config) -> int | None:
    """Experts per token of an MoE model's config (a transformers config), None for a dense model."""
    for name in ("num_experts_per_tok", "moe_top_k", "top_k"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return None
