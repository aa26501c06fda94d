"""What every objective receives and returns: one inputs struct per kind, so call sites never change; the base
of the config dataclass each objective may bring (its own hyperparameters, read from YAML); and the registries
that name them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from rl.registry import Registry

if TYPE_CHECKING:
    from rl.batch.types import TokenBatch
    from rl.collect.scoring import ScoredGroups


@dataclass
class ObjectiveConfig:
    """Base of an objective's settings. `name` is the registered name (rl.config sets it when it builds the
    settings from YAML); subclasses add the hyperparameters, each with a default and a one-line docstring, and
    check them in `__post_init__` with `rl.errors.require`. Several objectives may share one settings class."""

    name: str = ""


@dataclass(frozen=True)
class AdvantageInputs:
    """What an advantage estimator sees. rewards, valid: (P, G), group-major like the batch."""

    rewards: Tensor  # (P, G) shaped rewards: weighted verifier scores after overlong and KL-in-reward shaping
    valid: Tensor  # (P, G) bool; False where a verifier failed for infrastructure reasons (or overlong=mask)
    scored: ScoredGroups | None = None  # the verifiers' own scores and statuses, before shaping
    tokens: TokenBatch | None = None  # the padded sequences (response lengths, truncation, masks), (B = P*G, ...)


@dataclass(frozen=True)
class LossInputs:
    """What a policy loss sees; (B, T) tensors are aligned to targets (column t scores token t + 1)."""

    logps: Tensor  # (B, T) log pi of the sampled tokens under the current policy (with gradient)
    old_logps: Tensor  # (B, T) the ratio's denominator (sampler's or the trainer's recomputed logprobs)
    advantages: Tensor  # (B,)
    mask: Tensor  # (B, T) bool: the response tokens trained on
    is_weight: Tensor | None = None  # (B, T) detached truncated importance weight min(pi_trainer / pi_sampler, C)


@dataclass(frozen=True)
class LossOutput:
    per_token: Tensor  # (B, T), exactly 0 at masked positions
    metrics: dict[str, Tensor] = field(default_factory=dict)  # detached scalars, logged under loss/


AdvantageFn = Callable[[AdvantageInputs, ObjectiveConfig], Tensor]  # -> advantages (P, G)
LossFn = Callable[[LossInputs, ObjectiveConfig], LossOutput]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage")
LOSSES: Registry[LossFn] = Registry("loss")
register_advantage, get_advantage = ADVANTAGES.register, ADVANTAGES.get
register_loss, get_loss = LOSSES.register, LOSSES.get
