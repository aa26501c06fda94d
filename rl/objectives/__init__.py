"""The RL math as pure tensor functions behind registries: advantages, losses, their aggregation, KL, reward
shaping and the rollout/trainer mismatch correction. A new objective is one file that registers itself."""

from rl.objectives.advantages import ADVANTAGES, get_advantage, register_advantage
from rl.objectives.losses import LOSSES, get_loss, register_loss
from rl.objectives.types import AdvantageInputs, LossInputs, LossOutput, ObjectiveConfig

__all__ = ["ADVANTAGES", "LOSSES", "AdvantageInputs", "LossInputs", "LossOutput", "ObjectiveConfig", "get_advantage",
           "get_loss", "register_advantage", "register_loss"]
