"""Per-token estimators of KL(pi || pi_ref) from sampled log-probs (Schulman 2020, "Approximating KL Divergence").

The caller either adds kl_coef * k to the loss or subtracts it from the rewards; masking is the caller's job.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


def kl_penalty(logps: Tensor, ref_logps: Tensor, kind: str) -> Tensor:
    """Per-token KL estimate (B, T) from logps, ref_logps (B, T) of tokens sampled from pi.

    k1 = log(pi/ref) (unbiased, high variance, can be negative); k2 = 0.5 * log(pi/ref)^2 (biased, low variance);
    k3 = ref/pi - 1 - log(ref/pi) (unbiased, >= 0; the estimator in GRPO's loss, arXiv:2402.03300).
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_ESTIMATORS)}")
    log_ratio = logps - ref_logps  # (B, T) log(pi / ref)
    if kind == "k1":
        return log_ratio  # log(pi/ref)
    if kind == "k2":
        return 0.5 * log_ratio.pow(2)  # 0.5 * log(pi/ref)^2
    return torch.exp(-log_ratio) - 1 + log_ratio  # ref/pi - 1 - log(ref/pi)
