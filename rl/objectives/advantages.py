"""Advantage estimators: per-sample advantages from the rewards of P groups of G samples (one group per prompt).

Every estimator is `fn(inp: AdvantageInputs, cfg) -> advantages (P, G)`, registered with its config dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl.errors import require
from rl.objectives.types import (
    ADVANTAGES,
    AdvantageInputs,
    ObjectiveConfig,
    get_advantage,
    register_advantage,
)

__all__ = ["ADVANTAGES", "get_advantage", "register_advantage"]


@dataclass
class NormalisedConfig(ObjectiveConfig):
    """Settings of the estimators that divide by a standard deviation (grpo, reinforce_pp)."""

    eps: float = 1e-6
    """Added to the standard deviation before dividing by it."""

    def __post_init__(self):
        require(self.eps >= 0, "eps", "must be >= 0")


def _group_stats(rewards: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Masked per-group count, mean and zero-filled rewards; invalid rewards (maybe NaN) never enter a sum."""
    valid = valid.bool()
    r = torch.where(valid, rewards, torch.zeros_like(rewards))  # (P, G), invalid -> 0
    n_g = valid.sum(dim=-1, keepdim=True)  # (P, 1) valid samples per group
    mean_g = r.sum(dim=-1, keepdim=True) / n_g.clamp(min=1)  # (P, 1)
    return r, n_g, mean_g


def _group_centred(rewards: Tensor, valid: Tensor) -> Tensor:
    """r - mean_g over the valid samples of each group, 0 where invalid; (P, G)."""
    r, _, mean_g = _group_stats(rewards, valid)
    return torch.where(valid.bool(), r - mean_g, torch.zeros_like(r))  # r - mean_g


@register_advantage("grpo", config=NormalisedConfig)
def grpo(inp: AdvantageInputs, cfg: NormalisedConfig) -> Tensor:
    """GRPO group-normalised advantage (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

    rewards, valid: (P, G). Returns (P, G). The group std is the unbiased one (correction=1), as in TRL and
    verl; a group with fewer than 2 valid samples has no spread to normalise by and gets advantage 0.
    """
    valid = inp.valid.bool()
    r, n_g, mean_g = _group_stats(inp.rewards, valid)
    dev = torch.where(valid, r - mean_g, torch.zeros_like(r))  # (P, G)
    var_g = dev.pow(2).sum(dim=-1, keepdim=True) / (n_g - 1).clamp(min=1)  # (P, 1) unbiased
    adv = dev / (var_g.sqrt() + cfg.eps)  # (r - mean_g) / (std_g + eps)
    return torch.where(valid & (n_g >= 2), adv, torch.zeros_like(adv))


@register_advantage("dr_grpo")
def dr_grpo(inp: AdvantageInputs, cfg: ObjectiveConfig) -> Tensor:
    """Dr. GRPO advantage, the group-mean baseline without std division (Liu et al. 2025, arXiv:2503.20783).

    rewards, valid: (P, G). Returns (P, G).
    """
    return _group_centred(inp.rewards, inp.valid)  # r - mean_g


@register_advantage("rloo")
def rloo(inp: AdvantageInputs, cfg: ObjectiveConfig) -> Tensor:
    """REINFORCE leave-one-out advantage (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019).

    rewards, valid: (P, G). Returns (P, G). The baseline of sample i is the mean of the other valid samples of
    its group; a group with fewer than 2 valid samples gets 0.
    """
    valid = inp.valid.bool()
    r, n_g, _ = _group_stats(inp.rewards, valid)
    sum_g = r.sum(dim=-1, keepdim=True)  # (P, 1)
    loo_mean = (sum_g - r) / (n_g - 1).clamp(min=1)  # (P, G) mean_{j != i} r_j
    adv = r - loo_mean  # r_i - mean_{j!=i} r_j
    return torch.where(valid & (n_g >= 2), adv, torch.zeros_like(adv))


@register_advantage("reinforce_pp", config=NormalisedConfig)
def reinforce_pp(inp: AdvantageInputs, cfg: NormalisedConfig) -> Tensor:
    """REINFORCE++ with group-mean baseline, then whitened over the batch (Hu et al. 2025, arXiv:2501.03262).

    rewards, valid: (P, G). Returns (P, G). Batch statistics use all valid samples of all P groups, with the
    unbiased std; a batch with fewer than 2 valid samples gets 0.
    """
    valid = inp.valid.bool()
    adv_g = _group_centred(inp.rewards, valid)  # (P, G) r - mean_g, 0 where invalid
    n_b = valid.sum()
    mean_b = adv_g.sum() / n_b.clamp(min=1)  # scalar, over valid samples of the batch
    dev = torch.where(valid, adv_g - mean_b, torch.zeros_like(adv_g))  # (P, G)
    std_b = (dev.pow(2).sum() / (n_b - 1).clamp(min=1)).sqrt()
    adv = dev / (std_b + cfg.eps)  # (A - mean_B) / (std_B + eps)
    return torch.where(valid & (n_b >= 2), adv, torch.zeros_like(adv))
