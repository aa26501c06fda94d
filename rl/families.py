"""What purerl knows of the MoE model families it trains (Qwen2/3-MoE, OLMoE, DeepSeek, Mixtral): where their
routers sit, how many experts a token takes, and how a router turns its logits into experts and gates. Shared by
the trainer and the engines' capture of routing, so that "what is a router" is written once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ROUTER_MODULES = ("mlp.gate", "block_sparse_moe.gate")
"""Qualified-name suffixes of a router module: `mlp.gate` (Qwen2/3-MoE, OLMoE, DeepSeek), `block_sparse_moe.gate`
(Mixtral). `gate_proj` / `gate_up_proj` are expert weights, not routers."""

ROUTER_BIAS = "e_score_correction_bias"
"""DeepSeek-V3's per-expert bias: added to the scores for choosing experts only (auxiliary-loss-free balancing)."""


def is_router(module_name: str) -> bool:
    """True for the qualified name of a router module, in transformers' models and vLLM's alike."""
    return module_name.endswith(ROUTER_MODULES)


def top_k_of(config) -> int | None:
    """Experts per token of an MoE model's config (a transformers config), None for a dense model."""
    for name in ("num_experts_per_tok", "moe_top_k", "top_k"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return None


@dataclass(frozen=True)
class Routing:
    """How a family's router picks experts from its logits (N, E) and weighs them.

    softmax (Qwen2/3-MoE, OLMoE, Mixtral): top-k of softmax(logits); gates are those probabilities, renormalised
    when `normalize`. sigmoid (DeepSeek-V3): s = sigmoid(logits); the choice ranks s + bias within the `topk_groups`
    best of `groups` expert groups (a group scores the sum of its two best biased scores); gates are the chosen
    s, renormalised when `normalize`, times `scale` (routed_scaling_factor). The bias never enters a gate.
    """

    top_k: int
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    groups: int = 1
    topk_groups: int = 1
    normalize: bool = True
    scale: float = 1.0

    def scores(self, logits: Tensor) -> Tensor:
        """(N, E) float32: the router's probabilities (softmax) or independent expert scores (sigmoid)."""
        logits = logits.float()
        return logits.sigmoid() if self.scoring == "sigmoid" else torch.softmax(logits, dim=-1)

    def choose(self, logits: Tensor, bias: Tensor | None = None) -> Tensor:
        """(N, k) the experts each token is routed to (as transformers' and vLLM's routers choose them)."""
        if self.scoring == "softmax" and bias is None:
            s = logits.float()  # softmax keeps the order (of experts and of groups' maxima): no need to compute it
        else:
            s = self.scores(logits) + (0.0 if bias is None else bias.to(logits.device, torch.float32))  # (N, E)
        if self.groups > 1:
            n, e = s.shape
            grouped = s.view(n, self.groups, e // self.groups)  # (N, G, E/G)
            best = grouped.topk(2, dim=-1).values.sum(-1) if bias is not None else grouped.amax(-1)  # (N, G)
            kept = torch.zeros_like(best).scatter_(1, best.topk(self.topk_groups, dim=-1).indices, 1.0)
            s = s.masked_fill(kept.repeat_interleave(e // self.groups, dim=1) == 0, float("-inf"))
        return s.topk(self.top_k, dim=-1).indices

    def gates(self, logits: Tensor, chosen: Tensor) -> Tensor:
        """(N, k) float32 weights of the chosen experts (N, k), differentiable in logits."""
        w = self.scores(logits).gather(-1, chosen)
        if self.normalize:
            w = w / (w.sum(-1, keepdim=True) + (1e-20 if self.scoring == "sigmoid" else 0.0))
        return w * self.scale

    def entropy(self, logits: Tensor) -> Tensor:
        """(N,) entropy (nats) of the router's distribution over experts: its softmax, or its sigmoid scores
        normalised to sum to one."""
        s = self.scores(logits)
        p = s / s.sum(-1, keepdim=True) if self.scoring == "sigmoid" else s
        return -(p * torch.log(p.clamp_min(1e-20))).sum(-1)


def routing_of(config) -> Routing | None:
    """The routing of a transformers or vLLM (hf_config) model config; None for a dense model. DeepSeek-V3's
    config says `scoring_func: sigmoid` (vLLM reads it; transformers' DeepSeek-V3 router is always sigmoid)."""
    k = top_k_of(config)
    if k is None:
        return None
    sigmoid = getattr(config, "scoring_func", None) == "sigmoid" or getattr(config, "model_type", "") == "deepseek_v3"
    normalize = getattr(config, "norm_topk_prob", None)
    return Routing(
        top_k=k, scoring="sigmoid" if sigmoid else "softmax", groups=int(getattr(config, "n_group", None) or 1),
        topk_groups=int(getattr(config, "topk_group", None) or 1),
        normalize=True if normalize is None else bool(normalize),  # Mixtral always renormalises and has no key
        scale=float(getattr(config, "routed_scaling_factor", None) or 1.0) if sigmoid else 1.0)


def bias_step(bias: Tensor, load: Tensor, rate: float) -> Tensor:
    """DeepSeek-V3's auxiliary-loss-free update, per layer: b_i <- b_i + rate * sign(mean load - load_i).

    bias, load: (..., E), load the tokens routed to each expert; an overloaded expert's bias falls, an
    underloaded one's rises, an expert at the mean keeps its bias.
    """
    return bias + rate * torch.sign(load.mean(-1, keepdim=True) - load)
