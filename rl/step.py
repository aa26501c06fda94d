"""The policy update on a TrainBatch: epochs x mini-batches of optimizer steps, each micro-batched.

`policy_step` is one optimizer step; `update` runs the PPO-style loop with the old logprobs held fixed.
"""

from __future__ import annotations

import time

import torch

from rl.aggregation import aggregate, count_seqs, count_tokens
from rl.batch import TrainBatch
from rl.config import AlgoConfig, MoeConfig
from rl.dist import all_reduce_grads_, all_reduce_sum_, is_sharded, micro_batches, shard_bounds, world
from rl.kl import kl_penalty
from rl.logprobs import token_logprobs
from rl.losses import get_loss
from rl.moe import RoutingHooks, router_counts, router_metrics, sampler_agreement, top_k_of


def policy_step(model, optimizer, scheduler, batch: TrainBatch, algo: AlgoConfig, moe: MoeConfig | None = None, *,
                micro_batch_size: int, temperature: float, grad_clip: float, max_new_tokens: int,
                pack: bool = False) -> tuple[dict, dict]:
    """Accumulates gradients over micro-batches so the loss equals the full-batch loss, then steps once.

    Under torch.distributed each rank runs its rows of `batch` (rl.dist.shard_bounds) with the batch's global
    counts, gradients and metrics are summed over the ranks, and every rank returns the same values.
    Returns the step's metrics and what its forward passes saw before the step: `logps` (B, L-1) detached,
    and for an MoE policy the router `counts` (layers, E), `entropy` (layers,) and `tokens`.
    """
    moe = moe or MoeConfig()
    loss_fn = get_loss(algo.loss)
    top_k = top_k_of(model)
    num_seqs, num_tokens = count_seqs(batch.mask), count_tokens(batch.mask)
    sums = {"loss": 0.0, "clip": 0.0, "entropy": 0.0, "kl": 0.0, "aux": 0.0, "agree": 0, "agree_n": 0}
    seen = {"logps": torch.zeros_like(batch.old_logps), "counts": None, "entropy": None, "tokens": 0,
            "sampler_agree": 0, "sampler_agree_n": 0}
    model.train()
    rank, ranks = world()
    lo, hi = shard_bounds(len(batch), rank, ranks)
    sharded = ranks > 1 and is_sharded(model)
    rows = -(-len(batch) // ranks) if sharded else hi - lo  # FSDP: as many micro-batches as the busiest rank
    for start, end in micro_batches(lo, hi, micro_batch_size, -(-rows // micro_batch_size)):
        if start == end:  # FSDP: the gathers and reductions of a pass this rank has no rows for
            token_logprobs(model, batch.input_ids[:1, :2], batch.attention_mask[:1, :2]).logps.sum().mul(0).backward()
            continue
        mb = batch.slice(start, end)
        mask = mb.mask
        if mb.routed_experts is not None:  # routing replay: the forward uses the recorded experts
            positions = torch.nn.functional.pad(mask, (0, 1))  # inputs whose outputs score response tokens
            with RoutingHooks(model, tuple(mb.input_ids.shape), mb.routed_experts, positions) as replay:
                fwd = token_logprobs(model, mb.input_ids, mb.attention_mask, temperature, with_entropy=True,
                                     with_router=True)
            sums["agree"] += replay.agree
            sums["agree_n"] += replay.total
        else:
            fwd = token_logprobs(model, mb.input_ids, mb.attention_mask, temperature, with_entropy=True,
                                 with_router=top_k is not None, pack=pack)
        logps = fwd.logps
        per_token, m = loss_fn(logps, mb.old_logps, mb.advantages, mask, clip_low=algo.clip_low,
                               clip_high=algo.clip_high, dual_clip=algo.dual_clip, is_weight=mb.is_weight)
        if mb.ref_logps is not None:
            kl = torch.where(mask, kl_penalty(logps, mb.ref_logps, algo.kl_estimator), 0.0)  # (b, T)
            if not algo.kl_in_reward:
                per_token = per_token + algo.kl_coef * kl
            sums["kl"] += float(kl.detach().sum())
        loss = aggregate(per_token, mask, algo.loss_agg, num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_new_tokens)
        if moe.aux_loss_coef > 0 and fwd.aux_loss is not None:  # weighted by the micro-batch's share of the batch
            loss = loss + moe.aux_loss_coef * fwd.aux_loss * (len(mb) / len(batch))
            sums["aux"] += float(fwd.aux_loss.detach()) * len(mb) / len(batch)
        (loss * ranks if sharded else loss).backward()  # FSDP averages over the ranks (rl.dist.shard_model)
        sums["loss"] += float(loss.detach())
        sums["clip"] += float(m["clip_frac"]) * int(mask.sum())
        sums["entropy"] += float(torch.where(mask, fwd.entropy, 0.0).sum())
        seen["logps"][start : start + len(mb), : logps.shape[1]] = logps.detach()
        if fwd.router_logits and mb.sampler_experts is not None:
            # input positions whose outputs score response tokens: the mask's columns, as (b, w)
            positions = torch.nn.functional.pad(mask, (0, 1))
            a, n = sampler_agreement(fwd.router_logits, mb.sampler_experts, positions, top_k)
            seen["sampler_agree"] += a
            seen["sampler_agree_n"] += n
        if fwd.router_logits:
            counts, ent = router_counts(fwd.router_logits, mb.attention_mask, top_k)
            seen["counts"] = counts if seen["counts"] is None else seen["counts"] + counts
            seen["entropy"] = ent if seen["entropy"] is None else seen["entropy"] + ent
            seen["tokens"] += int(mb.attention_mask.sum())
    params = [p for p in model.parameters() if p.requires_grad]
    if ranks > 1:  # FSDP has summed the gradients already, into each rank's shard
        _reduce_over_ranks(sums, seen, [] if sharded else params)
    t_opt = time.perf_counter()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    seen["optimizer_s"] = time.perf_counter() - t_opt
    t = max(num_tokens, 1)
    metrics = {
        "loss/policy": sums["loss"],
        "loss/clip_frac": sums["clip"] / t,
        "loss/kl": sums["kl"] / t,
        "policy/entropy": sums["entropy"] / t,
        "grad_norm": float(grad_norm),
        "lr": scheduler.get_last_lr()[0],
    }
    if moe.aux_loss_coef > 0:
        metrics["moe/aux_loss"] = sums["aux"]
    if sums["agree_n"]:  # share of tokens whose router, left alone, would pick the replayed experts
        metrics["moe/replay_agreement"] = sums["agree"] / sums["agree_n"]
    return metrics, seen


def _reduce_over_ranks(sums: dict, seen: dict, params: list) -> None:
    """Sums the ranks' gradients (of `params`), metric sums and what their forwards saw (each rank's rows are
    zeros elsewhere)."""
    if params:
        all_reduce_grads_(params)
    scalars = ["tokens", "sampler_agree", "sampler_agree_n"]
    packed = torch.tensor([sums[k] for k in sums] + [seen[k] for k in scalars], dtype=torch.float64)
    tensors = [packed, seen["logps"]] + ([seen["counts"], seen["entropy"]] if seen["counts"] is not None else [])
    all_reduce_sum_(*tensors)
    for i, k in enumerate(sums):
        sums[k] = float(packed[i])
    for i, k in enumerate(scalars):
        seen[k] = int(packed[len(sums) + i])


def update(model, optimizer, scheduler, batch: TrainBatch, algo: AlgoConfig, moe: MoeConfig, **step_kwargs) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """algo.epochs passes over the batch in mini-batches of algo.mini_batch_size sequences, one optimizer step each.

    Returns the metrics (averaged over steps, router statistics over the first epoch), and the trainer's
    logprobs from forward passes made before any step of this update, with the rows (B,) bool they cover:
    all rows for a single step, the first mini-batch otherwise.
    """
    size = algo.mini_batch_size or len(batch)
    steps, router, optimizer_s, routing_agreement = [], None, 0.0, None
    before_rows = torch.zeros(len(batch), dtype=torch.bool)
    before_logps = torch.zeros_like(batch.old_logps)
    for epoch in range(algo.epochs):
        for start in range(0, len(batch), size):
            mb = batch.slice(start, start + size)
            metrics, seen = policy_step(model, optimizer, scheduler, mb, algo, moe, **step_kwargs)
            steps.append(metrics)
            optimizer_s += seen["optimizer_s"]
            if epoch == 0 and start == 0:
                if seen["sampler_agree_n"]:  # before any step: the trainer's routing against the engine's
                    routing_agreement = seen["sampler_agree"] / seen["sampler_agree_n"]
                before_rows[: len(mb)] = True
                before_logps[: len(mb), : seen["logps"].shape[1]] = seen["logps"]
            if epoch == 0 and seen["counts"] is not None:
                router = seen if router is None else {
                    "counts": router["counts"] + seen["counts"], "entropy": router["entropy"] + seen["entropy"],
                    "tokens": router["tokens"] + seen["tokens"]}
    out = {k: sum(m[k] for m in steps) / len(steps) for k in steps[0]}
    out["grad_norm_max"] = max(m["grad_norm"] for m in steps)
    out["optimizer_steps"] = len(steps)
    out["time/optimizer"] = optimizer_s
    if router is not None:
        out.update(router_metrics(router["counts"], router["entropy"], router["tokens"]))
    if routing_agreement is not None:
        out["moe/routing_agreement"] = routing_agreement
    return out, before_logps, before_rows


def mismatch_metrics(trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The rollout/trainer gap on the sampled tokens in mask (B, T): mean and max |diff|, and the perplexity ratio.

    ppl_ratio = exp(mean NLL_sampler - mean NLL_trainer): 1.0 when the two agree.
    """
    t = max(int(mask.sum()), 1)
    diff = torch.where(mask, (trainer_logps - sampler_logps).abs(), 0.0)
    mean_trainer = float(torch.where(mask, trainer_logps, 0.0).sum()) / t
    mean_sampler = float(torch.where(mask, sampler_logps, 0.0).sum()) / t
    return {
        "rollout/logprob_abs_diff_mean": float(diff.sum()) / t,
        "rollout/logprob_abs_diff_max": float(diff.max()) if mask.any() else 0.0,
        "rollout/ppl_ratio": float(torch.exp(torch.tensor(mean_trainer - mean_sampler))),
    }


def truncated_is_weight(trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """min(pi_trainer / pi_sampler, cap) per token (B, T), 1 outside the mask (TIS, Yao et al. 2025)."""
    w = torch.exp(trainer_logps - sampler_logps).clamp(max=cap)
    return torch.where(mask, w, torch.ones_like(w))


def make_optimizer(model, lr: float, betas: list[float], weight_decay: float, warmup_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    return optimizer, scheduler
