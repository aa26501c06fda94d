"""MoE-aware training: router statistics from the trainer's forward pass, router freezing and routing replay.

transformers' MoE models return one router-logit tensor per MoE layer when called with
`output_router_logits=True`: (N, E) over the N = B * L positions of the batch, padding included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rl.families import ROUTER_BIAS, Routing, bias_step, is_router, routing_of


def router_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters of every router module (weights, biases, DeepSeek's e_score_correction_bias)."""
    return [(f"{n}.{pn}", p) for n, m in model.named_modules() if is_router(n)
            for pn, p in m.named_parameters(recurse=False)]


def freeze_router(model) -> int:
    """Stops gradients into every router; returns how many parameter tensors were frozen."""
    params = router_parameters(model)
    if not params:
        raise ValueError("moe.freeze_router: the policy has no router parameters (is it an MoE model?)")
    for _, p in params:
        p.requires_grad_(False)
    return len(params)


def router_counts(router_logits: tuple[Tensor, ...], token_mask: Tensor, routing: Routing,
                  biases: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """Per-layer tokens per expert (L, E) and summed router entropy (L,) over the positions in token_mask (N,).

    An expert's load counts each token once per layer if the router chooses it (`Routing.choose`, with the layer's
    correction bias where the family has one).
    """
    counts, entropy = [], []
    keep = token_mask.reshape(-1).bool()
    for logits, bias in zip(router_logits, biases):
        logits = logits.detach()[keep.to(logits.device)]  # (n, E)
        chosen = routing.choose(logits, bias)  # (n, k)
        counts.append(torch.bincount(chosen.reshape(-1).cpu(), minlength=logits.shape[-1]).float())
        entropy.append(routing.entropy(logits).sum().cpu())
    return torch.stack(counts), torch.stack(entropy)


def expert_counts(experts: Tensor, token_mask: Tensor, num_experts: int) -> Tensor:
    """(L, E) tokens per expert of recorded routing experts (b, w, L, k) over the positions in token_mask (b, w)."""
    kept = experts[token_mask.bool()].long()  # (n, L, k)
    return torch.stack([torch.bincount(kept[:, i].reshape(-1), minlength=num_experts).float()
                        for i in range(kept.shape[1])])


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


def topk_agreement(own: Tensor, theirs: Tensor, keep: Tensor | None = None) -> tuple[int, int]:
    """(agreeing, compared) positions whose top-k expert sets are equal; own, theirs (..., k), keep (...) bool."""
    same = (own.sort(-1).values == theirs.sort(-1).values).all(-1)  # (...,)
    if keep is not None:
        same = same[keep.to(same.device)]
    return int(same.sum()), same.numel()


def moe_routers(model) -> list[torch.nn.Module]:
    """transformers' top-k router modules, in layer order. They return (logits, scores, indices):
    Qwen3-MoE, Qwen2-MoE, Mixtral and DeepSeek-V3 share this interface in transformers 5."""
    return [m for n, m in model.named_modules() if is_router(n) and hasattr(m, "top_k")]


def router_biases(model) -> list[Tensor | None]:
    """Each MoE layer's correction bias (E,) (DeepSeek-V3), None where its router has none; in layer order."""
    return [getattr(r, ROUTER_BIAS, None) for r in moe_routers(model)]


@torch.no_grad()
def update_router_bias_(model, load: Tensor, rate: float) -> None:
    """Auxiliary-loss-free balancing after an optimizer step: every layer's bias moves by `rate` against its
    experts' load (L, E) (`rl.families.bias_step`). The bias is a buffer, not a parameter: no optimizer sees it,
    and the sync sends it with the weights."""
    biases = router_biases(model)
    if any(b is None for b in biases):
        raise ValueError(f"moe.bias_update_rate: the policy's routers have no {ROUTER_BIAS} (only DeepSeek-V3-style "
                         "routers balance with a bias)")
    for bias, layer_load in zip(biases, load):
        bias.copy_(bias_step(bias.float(), layer_load.to(bias.device), rate))


def bias_metrics(model) -> dict[str, float]:
    """`moe/bias_abs_mean` (mean |b| over every layer's experts, after this step's update) where the routers have a
    correction bias; empty otherwise."""
    biases = [b for b in router_biases(model) if b is not None]
    return {"moe/bias_abs_mean": float(torch.cat([b.detach().float().abs().cpu() for b in biases]).mean())} if biases else {}


class RoutingHooks:
    """Records or replays the experts of every MoE layer for one forward pass (routing replay).

    `record`: after the pass, `experts()` is (b, w, layers, k), the top-k experts per token and layer.
    `replay` (b, w, layers, k): each router returns those experts instead of its own top-k; the gate weights are
    the current router's over the replayed experts (`Routing.gates`: its softmax, or DeepSeek-V3's sigmoid scores
    normalised and scaled), so the router still gets gradients. `agree / total` counts the tokens whose own top-k set equals the replayed one.
    """

    def __init__(self, model, shape: tuple[int, int], replay: Tensor | None = None, token_mask: Tensor | None = None):
        self.routers, self.routing = moe_routers(model), routing_of(model.config)
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
            agree, total = topk_agreement(own, chosen, self.token_mask)
            self.agree, self.total = self.agree + agree, self.total + total
            return logits, self.routing.gates(logits, chosen).to(out[1].dtype), chosen

        return hook

    def experts(self) -> Tensor:
        b, w = self.shape
        return torch.stack([x.view(b, w, -1) for x in self.recorded], dim=2)  # (b, w, layers, k)


@torch.no_grad()
def logprobs_and_routing(model, tokens: tuple[Tensor, Tensor], scoring, micro_batches: list[list[int]],
                         score_mask: Tensor | None = None, passes: int = 0, replay: Tensor | None = None,
                         ) -> tuple[Tensor, Tensor]:
    """The trainer's logprobs (B, L-1) and its routing (B, L, layers, k) on `tokens` (input ids, attention mask)
    over `micro_batches` (row indices), scored as `scoring` (rl.trainer.forward.Scoring) says but padded: routing is
    recorded on the padded layout.
    With `replay` (B, L, layers, k), the engine's routing, every router takes those experts and they come back."""
    import dataclasses

    from rl.trainer.forward import run_micro_batches, token_logprobs

    scoring = dataclasses.replace(scoring, pack=False)
    input_ids, attention_mask = tokens
    B, L = input_ids.shape
    logps, experts = torch.zeros(B, L - 1), []

    def forward(rows, ids, mask, score):
        chosen = None if replay is None else replay[rows, : ids.shape[1]]
        with RoutingHooks(model, tuple(ids.shape), chosen) as rec:
            f = token_logprobs(model, ids, mask, scoring, score_mask=score)
        logps[rows, : ids.shape[1] - 1] = f.logps.float().cpu()
        experts.append((rows, rec.experts().cpu() if chosen is None else chosen))

    run_micro_batches(model, micro_batches, input_ids, attention_mask, score_mask, passes, forward)
    layers, k = experts[0][1].shape[2:] if experts else (0, 0)
    out = torch.zeros(B, L, layers, k, dtype=torch.long)
    for rows, got in experts:
        out[rows, : got.shape[1]] = got
    return logps, out


def sampler_agreement(router_logits: tuple[Tensor, ...], sampler_experts: Tensor, positions: Tensor,
                      routing: Routing, biases: list[Tensor | None]) -> tuple[int, int]:
    """(agreeing, total) (position, layer) pairs whose trainer expert set equals the engine's.

    router_logits: per layer (b * w, E) from the trainer's forward, routed by `routing` with the layer's bias;
    sampler_experts (b, w, layers, k); positions (b, w) bool, the input positions to compare.
    """
    b, w = positions.shape
    agree = total = 0
    for layer, (logits, bias) in enumerate(zip(router_logits, biases)):
        own = routing.choose(logits.detach(), bias).view(b, w, routing.top_k)
        a, n = topk_agreement(own, sampler_experts[:, :, layer], positions)
        agree, total = agree + a, total + n
    return agree, total
