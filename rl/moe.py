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


def moe_routers(model) -> list[torch.nn.Module]:
    """transformers' top-k router modules, in layer order. They return (logits, scores, indices):
    Qwen3-MoE, Qwen2-MoE and Mixtral share this interface in transformers 5."""
    return [m for n, m in model.named_modules() if n.endswith(("mlp.gate", "block_sparse_moe.gate")) and hasattr(m, "top_k")]


class RoutingHooks:
    """Records or replays the experts of every MoE layer for one forward pass (routing replay).

    `record`: after the pass, `experts()` is (b, w, layers, k), the top-k experts per token and layer.
    `replay` (b, w, layers, k): each router returns those experts instead of its own top-k; the gate weights are
    the current router's softmax over the replayed experts (renormalised when the model renormalises), so the
    router still gets gradients. `agreement()` is the share of tokens whose own top-k set equals the replayed one.
    """

    def __init__(self, model, shape: tuple[int, int], replay: Tensor | None = None, token_mask: Tensor | None = None):
        self.routers = moe_routers(model)
        self.token_mask = None if token_mask is None else token_mask.reshape(-1).bool()
        if not self.routers:
            raise ValueError("routing replay: the policy has no top-k router modules (is it an MoE model?)")
        self.shape, self.replay = shape, replay
        self.recorded: list[Tensor] = []
        self.agree, self.total = 0, 0
        self.handles = []

    def __enter__(self) -> RoutingHooks:
        self.handles = [r.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def _hook(self, layer: int):
        def hook(module, args, out):
            logits, _, own = out
            if self.replay is None:
                self.recorded.append(own.detach())
                return None
            chosen = self.replay[:, :, layer].reshape(-1, own.shape[-1]).to(own.device)  # (N, k)
            same = (own.sort(-1).values == chosen.sort(-1).values).all(-1)  # (N,)
            if self.token_mask is not None:
                same = same[self.token_mask.to(same.device)]
            self.agree, self.total = self.agree + int(same.sum()), self.total + same.numel()
            probs = torch.softmax(logits.float(), dim=-1)
            scores = probs.gather(-1, chosen)
            if getattr(module, "norm_topk_prob", True):
                scores = scores / scores.sum(-1, keepdim=True)
            return logits, scores.to(logits.dtype), chosen

        return hook

    def experts(self) -> Tensor:
        b, w = self.shape
        return torch.stack([x.view(b, w, -1) for x in self.recorded], dim=2)  # (b, w, layers, k)

    def agreement(self) -> float:
        return self.agree / max(self.total, 1)


@torch.no_grad()
def logprobs_and_routing(model, input_ids: Tensor, attention_mask: Tensor, temperature: float,
                         micro_batch_size: int) -> tuple[Tensor, Tensor]:
    """The trainer's logprobs (B, L-1) and its routing (B, L, layers, k), in micro-batches, without gradients."""
    from rl.logprobs import token_logprobs

    B, L = input_ids.shape
    logps = torch.zeros(B, L - 1)
    experts = None
    for s in range(0, B, micro_batch_size):
        e = s + micro_batch_size
        w = int(attention_mask[s:e].sum(1).max())
        with RoutingHooks(model, (input_ids[s:e].shape[0], w)) as rec:
            logps[s:e, : w - 1] = token_logprobs(model, input_ids[s:e, :w], attention_mask[s:e, :w], temperature).logps
        got = rec.experts()
        if experts is None:
            experts = torch.zeros(B, L, got.shape[2], got.shape[3], dtype=torch.long)
        experts[s:e, :w] = got
    return logps, experts


def sampler_agreement(router_logits: tuple[Tensor, ...], sampler_experts: Tensor, positions: Tensor, top_k: int) -> tuple[int, int]:
    """(agreeing, total) (position, layer) pairs whose trainer top-k set equals the engine's.

    router_logits: per layer (b * w, E) from the trainer's forward; sampler_experts (b, w, layers, k);
    positions (b, w) bool, the input positions to compare.
    """
    b, w = positions.shape
    agree = total = 0
    for layer, logits in enumerate(router_logits):
        own = logits.detach().topk(top_k, dim=-1).indices.view(b, w, top_k).sort(-1).values
        theirs = sampler_experts[:, :, layer].sort(-1).values
        same = (own == theirs).all(-1)[positions]
        agree, total = agree + int(same.sum()), total + same.numel()
    return agree, total
