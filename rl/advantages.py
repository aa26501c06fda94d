"""Advantage estimators: per-sample advantages from the rewards of P groups of G samples (one group per prompt).

Every estimator is a pure function `fn(rewards (P, G), valid (P, G), *, eps) -> advantages (P, G)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rl.registry import Registry

AdvantageFn = Callable[..., Tensor]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage")
register_advantage = ADVANTAGES.register
get_advantage = ADVANTAGES.get


def _group_stats(rewards: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Masked per-group count, mean and zero-filled rewards; invalid rewards (maybe NaN) never enter a sum."""
    valid = valid.bool()
    r = torch.where(valid, rewards, torch.zeros_like(rewards))  # (P, G), invalid -> 0
    n_g = valid.sum(dim=-1, keepdim=True)  # (P, 1) valid samples per group
    mean_g = r.sum(dim=-1, keepdim=True) / n_g.clamp(min=1)  # (P, 1)
    return r, n_g, mean_g


@register_advantage("grpo")
def grpo(rewards: Tensor, valid: Tensor, *, eps: float = 1e-6) -> Tensor:
    """GRPO group-normalised advantage (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

    rewards, valid: (P, G). Returns (P, G). The group std is the unbiased one (correction=1), as in TRL and
    verl; a group with fewer than 2 valid samples has no spread to normalise by and gets advantage 0.
    """
    valid = valid.bool()
    r, n_g, mean_g = _group_stats(rewards, valid)
    dev = torch.where(valid, r - mean_g, torch.zeros_like(r))  # (P, G)
    var_g = dev.pow(2).sum(dim=-1, keepdim=True) / (n_g - 1).clamp(min=1)  # (P, 1) unbiased
    adv = dev / (var_g.sqrt() + eps)  # (r - mean_g) / (std_g + eps)
    return torch.where(valid & (n_g >= 2), adv, torch.zeros_like(adv))


@register_advantage("dr_grpo")
def dr_grpo(rewards: Tensor, valid: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Dr. GRPO advantage, the group-mean baseline without std division (Liu et al. 2025, arXiv:2503.20783).

    rewards, valid: (P, G). Returns (P, G). `eps` is unused; it is accepted so every estimator has one signature.
    """
    valid = valid.bool()
    r, _, mean_g = _group_stats(rewards, valid)
    adv = r - mean_g  # r - mean_g
    return torch.where(valid, adv, torch.zeros_like(adv))


@register_advantage("rloo")
def rloo(rewards: Tensor, valid: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE leave-one-out advantage (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019).

    rewards, valid: (P, G). Returns (P, G). The baseline of sample i is the mean of the other valid samples of
    its group; a group with fewer than 2 valid samples gets 0. `eps` is unused (one signature for all).
    """
    valid = valid.bool()
    r, n_g, _ = _group_stats(rewards, valid)
    sum_g = r.sum(dim=-1, keepdim=True)  # (P, 1)
    loo_mean = (sum_g - r) / (n_g - 1).clamp(min=1)  # (P, G) mean_{j != i} r_j
    adv = r - loo_mean  # r_i - mean_{j!=i} r_j
    return torch.where(valid & (n_g >= 2), adv, torch.zeros_like(adv))


@register_advantage("reinforce_pp")
def reinforce_pp(rewards: Tensor, valid: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++ with group-mean baseline, then whitened over the batch (Hu et al. 2025, arXiv:2501.03262).

    rewards, valid: (P, G). Returns (P, G). Batch statistics use all valid samples of all P groups, with the
    unbiased std; a batch with fewer than 2 valid samples gets 0.
    """
    valid = valid.bool()
    adv_g = dr_grpo(rewards, valid)  # (P, G) r - mean_g, 0 where invalid
    n_b = valid.sum()
    mean_b = adv_g.sum() / n_b.clamp(min=1)  # scalar, over valid samples of the batch
    dev = torch.where(valid, adv_g - mean_b, torch.zeros_like(adv_g))  # (P, G)
    std_b = (dev.pow(2).sum() / (n_b - 1).clamp(min=1)).sqrt()
    adv = dev / (std_b + eps)  # (A - mean_B) / (std_B + eps)
    return torch.where(valid & (n_b >= 2), adv, torch.zeros_like(adv))
