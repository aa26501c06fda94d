"""The rollout/trainer mismatch: how far the trainer's logprobs are from the sampler's on the same tokens, and
the truncated importance weight that corrects for it (TIS, Yao et al. 2025)."""

from __future__ import annotations

import torch


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
