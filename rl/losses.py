"""Per-token policy-gradient losses (PPO-clip, GSPO, CISPO) behind one signature; see rl/aggregation.py to reduce.

Every loss is `fn(logps, old_logps, advantages, mask, *, clip_low, clip_high, dual_clip, is_weight)` and returns
a (B, T) per-token loss that is exactly 0 at masked positions, plus detached scalar metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rl.registry import Registry

LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]

LOSSES: Registry[LossFn] = Registry("loss")
register_loss = LOSSES.register
get_loss = LOSSES.get


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over mask; 0 when the mask is empty. Used for metrics only (detached)."""
    x = torch.where(mask, x.detach().float(), torch.zeros((), dtype=torch.float32, device=x.device))
    return x.sum() / mask.sum().clamp(min=1)


def _finish(loss: Tensor, mask: Tensor, is_weight: Tensor | None) -> Tensor:
    """Apply the truncated IS weight and zero masked positions (where, not *, so inf/NaN there cannot leak)."""
    if is_weight is not None:
        safe_w = torch.where(mask, is_weight.detach(), torch.ones_like(is_weight))
        loss = loss * safe_w  # min(pi_train / pi_sampler, C) * loss
    return torch.where(mask, loss, torch.zeros_like(loss))


def _check_dual_clip(dual_clip: float | None) -> None:
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (e.g. 3.0), got {dual_clip}")


@register_loss("ppo_clip")
def ppo_clip(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-level PPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) as used by GRPO.

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). clip_high > clip_low is DAPO's clip-higher
    (Yu et al. 2025, arXiv:2503.14476). dual_clip > 1 bounds the loss of A < 0 tokens at -dual_clip * A
    (Ye et al. 2020, arXiv:1912.09729). Returns per-token loss (B, T) and metrics clip_frac, dual_clip_frac,
    ratio_mean over valid tokens.
    """
    _check_dual_clip(dual_clip)
    mask = mask.bool()
    adv = advantages.unsqueeze(-1)  # (B, 1)
    log_ratio = torch.where(mask, logps - old_logps, torch.zeros_like(logps))  # (B, T), 0 where masked
    ratio = torch.exp(log_ratio)  # r = pi / pi_old
    pg_unclipped = -ratio * adv  # -rA
    pg_clipped = -ratio.clamp(1 - clip_low, 1 + clip_high) * adv  # -clip(r)A
    loss = torch.maximum(pg_unclipped, pg_clipped)  # max(-rA, -clip(r)A)
    dual_active = torch.zeros_like(mask)
    if dual_clip is not None:
        dual_bound = -dual_clip * adv  # (B, 1) -cA, positive when A < 0
        dual_active = (adv < 0) & (loss > dual_bound)  # (B, T)
        loss = torch.where(adv < 0, torch.minimum(loss, dual_bound), loss)  # min(max(-rA,-clip(r)A), -cA)
    metrics = {
        "clip_frac": _masked_mean((pg_clipped > pg_unclipped).float(), mask),
        "dual_clip_frac": _masked_mean(dual_active.float(), mask),
        "ratio_mean": _masked_mean(ratio, mask),
    }
    return _finish(loss, mask, is_weight), metrics


@register_loss("gspo")
def gspo(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO sequence-level clipped surrogate, in its GSPO-token form (Zheng et al. 2025, arXiv:2507.18071).

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). The sequence ratio is the geometric mean of
    the token ratios over valid tokens. Its token form s_it = sg[s_i] * pi_t / sg[pi_t] has the value of s_i
    and, reduced with `seq_mean_token_mean`, exactly the paper's sequence-level gradient. Typical clip range
    is ~3e-4 / 4e-4 (the caller passes it). dual_clip applies to the sequence ratio as in ppo_clip. Metrics:
    clip_frac over valid tokens, ratio_mean over sequences with a valid token.
    """
    _check_dual_clip(dual_clip)
    mask = mask.bool()
    adv = advantages.unsqueeze(-1)  # (B, 1)
    log_ratio = torch.where(mask, logps - old_logps, torch.zeros_like(logps))  # (B, T), 0 where masked
    seq_len = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    seq_log_ratio = log_ratio.sum(dim=-1, keepdim=True) / seq_len.clamp(min=1)  # (B, 1) mean_t log r_t
    safe_logps = torch.where(mask, logps, torch.zeros_like(logps))  # (B, T)
    # s_it = sg[s_i] * exp(logp_t - sg[logp_t]): value s_i, gradient s_i * grad logp_t
    ratio = torch.exp(seq_log_ratio.detach() + safe_logps - safe_logps.detach())  # (B, T)
    pg_unclipped = -ratio * adv  # -sA
    pg_clipped = -ratio.clamp(1 - clip_low, 1 + clip_high) * adv  # -clip(s)A
    loss = torch.maximum(pg_unclipped, pg_clipped)  # max(-sA, -clip(s)A)
    dual_active = torch.zeros_like(mask)
    if dual_clip is not None:
        dual_bound = -dual_clip * adv  # (B, 1)
        dual_active = (adv < 0) & (loss > dual_bound)
        loss = torch.where(adv < 0, torch.minimum(loss, dual_bound), loss)  # min(., -cA) if A<0
    has_tokens = seq_len.squeeze(-1) > 0  # (B,)
    metrics = {
        "clip_frac": _masked_mean((pg_clipped > pg_unclipped).float(), mask),
        "dual_clip_frac": _masked_mean(dual_active.float(), mask),
        "ratio_mean": _masked_mean(seq_log_ratio.squeeze(-1).exp(), has_tokens),
    }
    return _finish(loss, mask, is_weight), metrics


@register_loss("cispo")
def cispo(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
    is_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO: clipped, stop-gradient IS weight times REINFORCE (MiniMax-M1, arXiv:2506.13585).

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). Unlike PPO no token loses its gradient; only
    the weight is clipped. dual_clip must be None: the weight is already bounded. The loss value is not a
    surrogate of the objective, only its gradient is meaningful. Metrics: clip_frac (weight was clipped),
    ratio_mean over valid tokens.
    """
    if dual_clip is not None:
        raise ValueError("cispo does not use dual_clip (its IS weight is already clipped); set it to None")
    mask = mask.bool()
    adv = advantages.unsqueeze(-1)  # (B, 1)
    safe_logps = torch.where(mask, logps, torch.zeros_like(logps))  # (B, T)
    log_ratio = torch.where(mask, logps - old_logps, torch.zeros_like(logps))  # (B, T)
    ratio = torch.exp(log_ratio)  # r_t = pi / pi_old
    weight = ratio.clamp(1 - clip_low, 1 + clip_high).detach()  # sg[clip(r_t)]
    loss = -weight * adv * safe_logps  # -sg[clip(r)] * A * log pi
    metrics = {
        "clip_frac": _masked_mean(((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float(), mask),
        "ratio_mean": _masked_mean(ratio, mask),
    }
    return _finish(loss, mask, is_weight), metrics
