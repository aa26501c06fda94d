"""One policy update on a TrainBatch: micro-batched loss, backward, clipping, optimizer step."""

from __future__ import annotations

import torch

from rl.aggregation import aggregate, count_seqs, count_tokens
from rl.batch import TrainBatch
from rl.config import AlgoConfig
from rl.kl import kl_penalty
from rl.logprobs import token_logprobs
from rl.losses import get_loss


def policy_step(model, optimizer, scheduler, batch: TrainBatch, algo: AlgoConfig, *, micro_batch_size: int,
                temperature: float, grad_clip: float, max_new_tokens: int) -> dict[str, float]:
    """Accumulates gradients over micro-batches so the loss equals the full-batch loss, then steps once.

    The old logprobs are the sampler's (one update per rollout batch), so the forward pass here also
    measures the trainer/sampler gap on the same tokens: `rollout/logprob_abs_diff_*`.
    """
    loss_fn = get_loss(algo.loss)
    num_seqs, num_tokens = count_seqs(batch.mask), count_tokens(batch.mask)
    sums = {"loss": 0.0, "clip": 0.0, "entropy": 0.0, "kl": 0.0, "diff": 0.0, "logp": 0.0, "old_logp": 0.0}
    diff_max = 0.0
    model.train()
    for start in range(0, len(batch), micro_batch_size):
        mb = batch.slice(start, start + micro_batch_size)
        mask = mb.mask
        logps, entropy = token_logprobs(model, mb.input_ids, mb.attention_mask, temperature, with_entropy=True)
        per_token, m = loss_fn(logps, mb.old_logps, mb.advantages, mask,
                               clip_low=algo.clip_low, clip_high=algo.clip_high, dual_clip=algo.dual_clip)
        if mb.ref_logps is not None:
            kl = kl_penalty(logps, mb.ref_logps, algo.kl_estimator)  # (b, T)
            per_token = per_token + algo.kl_coef * torch.where(mask, kl, 0.0)
            sums["kl"] += float(torch.where(mask, kl.detach(), 0.0).sum())
        loss = aggregate(per_token, mask, algo.loss_agg, num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_new_tokens)
        loss.backward()
        n = int(mask.sum())
        gap = torch.where(mask, (logps.detach() - mb.old_logps).abs(), 0.0)
        sums["loss"] += float(loss.detach())
        sums["clip"] += float(m["clip_frac"]) * n
        sums["entropy"] += float(torch.where(mask, entropy, 0.0).sum())
        sums["diff"] += float(gap.sum())
        sums["logp"] += float(torch.where(mask, logps.detach(), 0.0).sum())
        sums["old_logp"] += float(torch.where(mask, mb.old_logps, 0.0).sum())
        diff_max = max(diff_max, float(gap.max())) if n else diff_max
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    t = max(num_tokens, 1)
    return {
        "loss/policy": sums["loss"],
        "loss/clip_frac": sums["clip"] / t,
        "loss/kl": sums["kl"] / t,
        "policy/entropy": sums["entropy"] / t,
        "grad_norm": float(grad_norm),
        "lr": scheduler.get_last_lr()[0],
        "rollout/logprob_abs_diff_mean": sums["diff"] / t,
        "rollout/logprob_abs_diff_max": diff_max,
        # exp(mean NLL_sampler - mean NLL_trainer): 1.0 when the two agree on the sampled tokens
        "rollout/ppl_ratio": float(torch.exp(torch.tensor((sums["logp"] - sums["old_logp"]) / t))),
    }


def make_optimizer(model, lr: float, betas: list[float], weight_decay: float, warmup_steps: int):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup_steps + 1)))
    return optimizer, scheduler
