"""Per-token policy-gradient losses (PPO-clip, GSPO, CISPO) behind one signature; see aggregation.py to reduce.

Every loss is `fn(inp: LossInputs, cfg) -> LossOutput`, registered with its config dataclass: a (B, T) per-token
loss that is exactly 0 at masked positions, plus detached scalar metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl.errors import require
from rl.objectives.types import LOSSES, LossInputs, LossOutput, ObjectiveConfig, get_loss, register_loss

__all__ = ["LOSSES", "get_loss", "register_loss"]


@dataclass
class ClipConfig(ObjectiveConfig):
    """Settings of a clipped ratio (cispo; the base of ppo_clip's and gspo's)."""

    clip_low: float = 0.2
    """Lower clip range: ratio >= 1 - clip_low."""
    clip_high: float = 0.2
    """Upper clip range: ratio <= 1 + clip_high (DAPO clip-higher when > clip_low)."""

    def __post_init__(self):
        require(self.clip_low >= 0, "clip_low", "must be >= 0")
        require(self.clip_high >= 0, "clip_high", "must be >= 0")


@dataclass
class DualClipConfig(ClipConfig):
    """Settings of a clipped surrogate with an optional dual clip (ppo_clip, gspo)."""

    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss of negative-advantage tokens at -c * A; null disables it."""

    def __post_init__(self):
        super().__post_init__()
        require(self.dual_clip is None or self.dual_clip > 1, "dual_clip", "must be > 1 (e.g. 3.0) or null")


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


def _dual_clip(loss: Tensor, adv: Tensor, dual_clip: float | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    """min(loss, -c A) where A < 0 (Ye et al. 2020, arXiv:1912.09729); adv (B, 1). Returns it and the share of
    valid tokens where the bound was active."""
    if dual_clip is None:
        return loss, _masked_mean(torch.zeros_like(loss), mask)
    dual_bound = -dual_clip * adv  # (B, 1) -cA, positive when A < 0
    active = (adv < 0) & (loss > dual_bound)  # (B, T)
    loss = torch.where(adv < 0, torch.minimum(loss, dual_bound), loss)  # min(max(-rA, -clip(r)A), -cA)
    return loss, _masked_mean(active.float(), mask)


@register_loss("ppo_clip", config=DualClipConfig)
def ppo_clip(inp: LossInputs, cfg: DualClipConfig) -> LossOutput:
    """Token-level PPO clipped surrogate (Schulman et al. 2017, arXiv:1707.06347) as used by GRPO.

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). clip_high > clip_low is DAPO's clip-higher
    (Yu et al. 2025, arXiv:2503.14476). dual_clip > 1 bounds the loss of A < 0 tokens at -dual_clip * A
    (Ye et al. 2020, arXiv:1912.09729). Metrics clip_frac, dual_clip_frac, ratio_mean over valid tokens.
    """
    mask = inp.mask.bool()
    adv = inp.advantages.unsqueeze(-1)  # (B, 1)
    log_ratio = torch.where(mask, inp.logps - inp.old_logps, torch.zeros_like(inp.logps))  # (B, T), 0 where masked
    ratio = torch.exp(log_ratio)  # r = pi / pi_old
    pg_unclipped = -ratio * adv  # -rA
    pg_clipped = -ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * adv  # -clip(r)A
    loss = torch.maximum(pg_unclipped, pg_clipped)  # max(-rA, -clip(r)A)
    loss, dual_frac = _dual_clip(loss, adv, cfg.dual_clip, mask)
    metrics = {
        "clip_frac": _masked_mean((pg_clipped > pg_unclipped).float(), mask),
        "dual_clip_frac": dual_frac,
        "ratio_mean": _masked_mean(ratio, mask),
    }
    return LossOutput(_finish(loss, mask, inp.is_weight), metrics)


@register_loss("gspo", config=DualClipConfig)
def gspo(inp: LossInputs, cfg: DualClipConfig) -> LossOutput:
    """GSPO sequence-level clipped surrogate, in its GSPO-token form (Zheng et al. 2025, arXiv:2507.18071).

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). The sequence ratio is the geometric mean of
    the token ratios over valid tokens. Its token form s_it = sg[s_i] * pi_t / sg[pi_t] has the value of s_i
    and, reduced with `seq_mean_token_mean`, exactly the paper's sequence-level gradient. The paper's clip range
    is ~3e-4 / 4e-4. dual_clip applies to the sequence ratio as in ppo_clip. Metrics: clip_frac over valid
    tokens, ratio_mean over sequences with a valid token.
    """
    mask = inp.mask.bool()
    adv = inp.advantages.unsqueeze(-1)  # (B, 1)
    log_ratio = torch.where(mask, inp.logps - inp.old_logps, torch.zeros_like(inp.logps))  # (B, T), 0 where masked
    seq_len = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    seq_log_ratio = log_ratio.sum(dim=-1, keepdim=True) / seq_len.clamp(min=1)  # (B, 1) mean_t log r_t
    safe_logps = torch.where(mask, inp.logps, torch.zeros_like(inp.logps))  # (B, T)
    # s_it = sg[s_i] * exp(logp_t - sg[logp_t]): value s_i, gradient s_i * grad logp_t
    ratio = torch.exp(seq_log_ratio.detach() + safe_logps - safe_logps.detach())  # (B, T)
    pg_unclipped = -ratio * adv  # -sA
    pg_clipped = -ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * adv  # -clip(s)A
    loss = torch.maximum(pg_unclipped, pg_clipped)  # max(-sA, -clip(s)A)
    loss, dual_frac = _dual_clip(loss, adv, cfg.dual_clip, mask)
    has_tokens = seq_len.squeeze(-1) > 0  # (B,)
    metrics = {
        "clip_frac": _masked_mean((pg_clipped > pg_unclipped).float(), mask),
        "dual_clip_frac": dual_frac,
        "ratio_mean": _masked_mean(seq_log_ratio.squeeze(-1).exp(), has_tokens),
    }
    return LossOutput(_finish(loss, mask, inp.is_weight), metrics)


@register_loss("cispo", config=ClipConfig)
def cispo(inp: LossInputs, cfg: ClipConfig) -> LossOutput:
    """CISPO: clipped, stop-gradient IS weight times REINFORCE (MiniMax-M1, arXiv:2506.13585).

    logps, old_logps, mask, is_weight: (B, T); advantages: (B,). Unlike PPO no token loses its gradient; only
    the weight is clipped (so it takes no dual clip). The loss value is not a surrogate of the objective, only
    its gradient is meaningful. Metrics: clip_frac (weight was clipped), ratio_mean over valid tokens.
    """
    mask = inp.mask.bool()
    adv = inp.advantages.unsqueeze(-1)  # (B, 1)
    safe_logps = torch.where(mask, inp.logps, torch.zeros_like(inp.logps))  # (B, T)
    log_ratio = torch.where(mask, inp.logps - inp.old_logps, torch.zeros_like(inp.logps))  # (B, T)
    ratio = torch.exp(log_ratio)  # r_t = pi / pi_old
    weight = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high).detach()  # sg[clip(r_t)]
    loss = -weight * adv * safe_logps  # -sg[clip(r)] * A * log pi
    metrics = {
        "clip_frac": _masked_mean(((ratio < 1 - cfg.clip_low) | (ratio > 1 + cfg.clip_high)).float(), mask),
        "ratio_mean": _masked_mean(ratio, mask),
    }
    return LossOutput(_finish(loss, mask, inp.is_weight), metrics)
