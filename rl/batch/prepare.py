"""Scored rollout groups -> the complete TrainBatch: reward shaping, advantages, the ratio's denominator, the
truncated IS weight and the experts to replay. `prepare_batch` is pure; the trainer forwards it needs (the
reference, the recomputed old logprobs) come first from `trainer_forwards`."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rl.batch.types import TokenBatch, TrainBatch
from rl.collect.scoring import ScoredGroups
from rl.config import Config
from rl.objectives import AdvantageInputs, get_advantage
from rl.objectives.mismatch import truncated_is_weight
from rl.objectives.shaping import apply_overlong, sequence_kl


@dataclass(frozen=True)
class TrainerForwards:
    """The no-grad trainer forwards a batch needs, made before any optimizer step of the step."""

    ref_logps: torch.Tensor | None = None  # (B, L-1) the frozen reference (algo.kl_coef > 0)
    old_logps: torch.Tensor | None = None  # (B, L-1) the policy before the update (algo.old_logprobs=trainer)
    old_routing: torch.Tensor | None = None  # (B, L, layers, k) its routing (moe.routing_replay=trainer or vllm)
    reference_s: float = 0.0  # seconds of the reference forward


def trainer_forwards(trainer, tokens: TokenBatch, cfg: Config) -> TrainerForwards:
    """The reference's logprobs when the KL term needs them, and the policy's own when the ratio's denominator is
    the trainer's: with its routing under trainer routing replay, through the engine's under vllm routing replay."""
    ref, old, routing, ref_s = None, None, None, 0.0
    if cfg.algo.kl_coef > 0:
        t = time.perf_counter()
        ref, _ = trainer.logprobs(tokens.input_ids, tokens.attention_mask, "reference", score_mask=tokens.response_mask)
        ref_s = time.perf_counter() - t
    if cfg.algo.old_logprobs == "trainer":
        engine = replayed_experts(tokens, TrainerForwards(), cfg) if cfg.moe.routing_replay == "vllm" else None
        old, routing = trainer.logprobs(tokens.input_ids, tokens.attention_mask, "policy",
                                        cfg.moe.routing_replay != "off", tokens.response_mask, replay=engine)
    return TrainerForwards(ref, old, routing, ref_s)


def prepare_batch(scored: ScoredGroups, tokens: TokenBatch, fwd: TrainerForwards, cfg: Config,
                  ) -> tuple[TrainBatch, dict[str, float]]:
    """The TrainBatch of P scored groups of G samples, and the shaping metrics (`reward/kl_penalty`)."""
    algo, P, G = cfg.algo, *scored.total.shape
    rewards, valid = apply_overlong(scored.total, scored.valid, tokens.response_lengths.view(P, G),
                                    tokens.truncated.view(P, G), algo, cfg.rollout.max_new_tokens)
    mask = tokens.response_mask & valid.reshape(-1, 1)  # (B, L-1): response tokens of valid samples
    metrics = {}
    if algo.kl_in_reward:  # log pi from the sampler: the policy the tokens came from
        seq_kl = sequence_kl(tokens.sampler_logps, fwd.ref_logps, mask, algo.kl_estimator)  # (B,)
        rewards = rewards - algo.kl_coef * seq_kl.view(P, G)
        metrics["reward/kl_penalty"] = float(algo.kl_coef * seq_kl[mask.any(-1)].mean()) if mask.any() else 0.0
    advantages = get_advantage(algo.advantage.name)(AdvantageInputs(rewards, valid, scored, tokens), algo.advantage)
    old_logps = fwd.old_logps if fwd.old_logps is not None else tokens.sampler_logps.clone()
    is_weight = None
    if algo.tis_cap is not None:
        is_weight = truncated_is_weight(fwd.old_logps, tokens.sampler_logps, mask, algo.tis_cap)
    batch = TrainBatch(tokens.input_ids, tokens.attention_mask, mask, old_logps, advantages.reshape(-1).float(),
                       tokens.response_lengths, ref_logps=fwd.ref_logps, sampler_logps=tokens.sampler_logps,
                       is_weight=is_weight, routed_experts=replayed_experts(tokens, fwd, cfg),
                       sampler_experts=tokens.sampler_experts)
    return batch, metrics


def replayed_experts(tokens: TokenBatch, fwd: TrainerForwards, cfg: Config) -> torch.Tensor | None:
    """The routing every forward of the update replays (moe.routing_replay): the engine's or the trainer's own."""
    if cfg.moe.routing_replay == "vllm":
        if tokens.sampler_experts is None:
            raise RuntimeError("moe.routing_replay=vllm: the engines returned no routing for this batch")
        return tokens.sampler_experts
    return fwd.old_routing if cfg.moe.routing_replay == "trainer" else None
