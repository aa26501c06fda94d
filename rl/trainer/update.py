"""The policy update on a TrainBatch: epochs x mini-batches of optimizer steps, each micro-batched.

`policy_step` is one optimizer step; `update` runs the PPO-style loop with the old logprobs held fixed.
Under torch.distributed each rank runs its rows of every mini-batch (rl.trainer.micro: balanced by tokens) with
the mini-batch's global counts, so the ranks' losses sum to the one-rank loss; `StepSums.all_reduce` and the
gradient all-reduce make every rank hold the same result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rl.batch.types import TrainBatch
from rl.config import Config
from rl.families import Routing, routing_of
from rl.objectives import LossInputs, get_loss
from rl.objectives.aggregation import aggregate, count_seqs, count_tokens
from rl.objectives.kl import kl_penalty
from rl.trainer.chunked import EntropyMode
from rl.trainer.dist import all_reduce_grads_, all_reduce_sum_, is_sharded, world
from rl.trainer.forward import Forward, Scoring, token_logprobs
from rl.trainer.micro import MicroBatching, plan_ranks
from rl.trainer.moe import (
    RoutingHooks,
    bias_metrics,
    expert_counts,
    router_biases,
    router_counts,
    router_metrics,
    sampler_agreement,
    update_router_bias_,
)
from rl.trainer.optim import Optim


@dataclass
class StepSums:
    """What the micro-batches of one optimizer step add up. Every field is a sum over micro-batches and then
    over the ranks (`all_reduce`, one collective, in field order)."""

    loss: float = 0.0  # the aggregated loss (each micro-batch's share of the mini-batch's scalar)
    clipped: float = 0.0  # clipped tokens (the loss's clip_frac times the micro-batch's tokens)
    entropy: float = 0.0  # summed over response tokens
    kl: float = 0.0  # summed per-token KL to the reference over response tokens
    aux: float = 0.0  # the MoE aux loss, weighted by the micro-batch's share of the rows
    replay_agree: int = 0  # tokens whose own top-k equals the replayed experts (moe.routing_replay)
    replay_total: int = 0
    sampler_agree: int = 0  # (position, layer) pairs where the trainer routes like the engine did
    sampler_total: int = 0
    router_tokens: int = 0  # attended tokens behind the router counts

    def all_reduce(self, *tensors: torch.Tensor) -> None:
        """Sums these fields and `tensors` (in place) over the ranks in one collective; a no-op on one rank."""
        names = [f.name for f in dataclasses.fields(self)]
        device = tensors[0].device if tensors else torch.device("cpu")  # NCCL reduces on the GPU
        packed = torch.tensor([float(getattr(self, n)) for n in names], dtype=torch.float64, device=device)
        all_reduce_sum_(packed, *tensors)
        for n, v in zip(names, packed.tolist()):
            setattr(self, n, type(getattr(self, n))(v))


@dataclass
class Seen:
    """What the forward passes of one optimizer step saw before it: the trainer's logprobs and router load."""

    logps: torch.Tensor  # (B, L-1) detached, 0 in rows another rank computed
    counts: torch.Tensor | None = None  # (layers, E) tokens per expert, as the trainer's routers choose
    entropy: torch.Tensor | None = None  # (layers,) summed router entropy
    load: torch.Tensor | None = None  # (layers, E) tokens per expert of the routing the forwards used (replayed or own)


@dataclass(frozen=True)
class UpdateResult:
    metrics: dict
    before_logps: torch.Tensor  # (B, L-1) from forwards made before any optimizer step of this update
    before_rows: torch.Tensor  # (B,) bool: the rows before_logps covers (the first mini-batch)


def policy_step(model, optim: Optim, batch: TrainBatch, cfg: Config) -> tuple[dict, Seen, StepSums]:
    """Accumulates gradients over micro-batches so the loss equals the full-batch loss, then steps once.
    Returns the step's metrics, what its forwards saw before the step, and the step's sums."""
    num_seqs, num_tokens = count_seqs(batch.mask), count_tokens(batch.mask)
    sums, seen, routing = StepSums(), Seen(torch.zeros_like(batch.old_logps)), routing_of(model.config)
    biases = router_biases(model)  # the buffers themselves: they move only after the optimizer step
    rank, ranks = world()
    sharded = ranks > 1 and is_sharded(model)
    model.train()
    plan = plan_ranks(batch.lengths(), ranks, micro_batching(cfg))
    passes = plan.batches[rank] + [[]] * ((plan.passes - len(plan.batches[rank])) if sharded else 0)
    for i, rows in enumerate(passes):
        if sharded:  # FSDP reduce-scatters the gradients once, after the last micro-batch
            model.set_requires_gradient_sync(i == len(passes) - 1)
        if not rows:  # FSDP: the gathers and reductions of a pass this rank has no rows for
            token_logprobs(model, batch.input_ids[:1, :2], batch.attention_mask[:1, :2],
                           scoring_of(cfg)).logps.sum().mul(0).backward()
            continue
        index = torch.tensor(rows, device=batch.input_ids.device)
        mb = batch.select(index)
        fwd = _forward(model, mb, cfg, routing, sums)
        loss = _micro_loss(fwd, mb, cfg, sums, share=len(mb) / len(batch), counts=(num_seqs, num_tokens))
        (loss * ranks if sharded else loss).backward()  # FSDP averages over the ranks (rl.trainer.dist.shard_model)
        _record(seen, sums, fwd, mb, index, routing, biases)
    sums.all_reduce(*_seen_tensors(seen))
    params = [p for p in model.parameters() if p.requires_grad]
    if ranks > 1 and not sharded:  # FSDP has summed the gradients already, into each rank's shard
        all_reduce_grads_(params)
    grad_norm, optimizer_s = optim.step(params, cfg.trainer.grad_clip)
    if cfg.moe.bias_update_rate > 0 and seen.load is not None:  # every rank holds the summed load: same update
        update_router_bias_(model, seen.load, cfg.moe.bias_update_rate)
    metrics = _step_metrics(sums, grad_norm, optim.lr(), num_tokens, cfg) | bias_metrics(model)
    plan_metrics = {"trainer/micro_batches": plan.passes, "trainer/token_imbalance": plan.token_imbalance}
    return metrics | plan_metrics | {"time/optimizer": optimizer_s}, seen, sums


def micro_batching(cfg: Config) -> MicroBatching:
    return MicroBatching(cfg.trainer.micro_batch_size, cfg.trainer.max_tokens_per_micro_batch)


def scoring_of(cfg: Config, entropy: EntropyMode = "none", pack: bool | None = None) -> Scoring:
    """The run's Scoring: its temperature, packing and chunked head, with `entropy` (and `pack`, when given)."""
    t = cfg.trainer
    return Scoring(cfg.rollout.temperature, t.pack_sequences if pack is None else pack, t.logprob_chunk_tokens, entropy)


def _forward(model, mb: TrainBatch, cfg: Config, routing: Routing | None, sums: StepSums) -> Forward:
    """The micro-batch's forward with gradients; it replays the batch's routing when it has one."""
    entropy = "grad" if cfg.algo.entropy_coef > 0 else "value"  # the metric, or a term of the loss
    if mb.routed_experts is None:
        return token_logprobs(model, mb.input_ids, mb.attention_mask, scoring_of(cfg, entropy),
                              with_router=routing is not None, score_mask=mb.mask)
    positions = torch.nn.functional.pad(mb.mask, (0, 1))  # inputs whose outputs score response tokens
    with RoutingHooks(model, tuple(mb.input_ids.shape), mb.routed_experts, positions) as replay:
        fwd = token_logprobs(model, mb.input_ids, mb.attention_mask, scoring_of(cfg, entropy, pack=False),
                             with_router=True, score_mask=mb.mask)
    sums.replay_agree += replay.agree
    sums.replay_total += replay.total
    return fwd


def _micro_loss(fwd: Forward, mb: TrainBatch, cfg: Config, sums: StepSums, share: float,
                counts: tuple[int, int]) -> torch.Tensor:
    """This micro-batch's part of the mini-batch's scalar loss: the policy loss (+ KL, + aux), aggregated with
    the mini-batch's global counts; `share` is its fraction of the mini-batch's rows."""
    algo, mask = cfg.algo, mb.mask
    out = get_loss(algo.loss.name)(LossInputs(fwd.logps, mb.old_logps, mb.advantages, mask, mb.is_weight), algo.loss)
    per_token = out.per_token
    if algo.entropy_coef > 0:  # the entropy bonus: -coef * H per token, with its gradient
        per_token = per_token - algo.entropy_coef * torch.where(mask, fwd.entropy, 0.0)
    if mb.ref_logps is not None:
        kl = torch.where(mask, kl_penalty(fwd.logps, mb.ref_logps, algo.kl_estimator), 0.0)  # (b, T)
        if not algo.kl_in_reward:
            per_token = per_token + algo.kl_coef * kl
        sums.kl += float(kl.detach().sum())
    loss = aggregate(per_token, mask, algo.loss_agg, num_seqs=counts[0], num_tokens=counts[1],
                     max_len=cfg.rollout.max_new_tokens)
    if cfg.moe.aux_loss_coef > 0 and fwd.aux_loss is not None:  # weighted by the micro-batch's share of the batch
        loss = loss + cfg.moe.aux_loss_coef * fwd.aux_loss * share
        sums.aux += float(fwd.aux_loss.detach()) * share
    sums.loss += float(loss.detach())
    sums.clipped += float(out.metrics.get("clip_frac", 0.0)) * int(mask.sum())  # a loss that clips reports it
    sums.entropy += float(torch.where(mask, fwd.entropy, 0.0).sum())
    return loss


def _record(seen: Seen, sums: StepSums, fwd: Forward, mb: TrainBatch, rows: torch.Tensor, routing: Routing | None,
            biases: list) -> None:
    """Files what this micro-batch's forward saw: its logprobs, router load and agreement with the engine, and
    the load of the routing it used (the replayed experts under replay), which steers the bias update."""
    seen.logps[rows, : fwd.logps.shape[1]] = fwd.logps.detach()
    if not fwd.router_logits:
        return
    if mb.sampler_experts is not None:
        positions = torch.nn.functional.pad(mb.mask, (0, 1))  # (b, w) inputs whose outputs score response tokens
        agree, total = sampler_agreement(fwd.router_logits, mb.sampler_experts, positions, routing, biases)
        sums.sampler_agree += agree
        sums.sampler_total += total
    counts, entropy = router_counts(fwd.router_logits, mb.attention_mask, routing, biases)
    load = counts if mb.routed_experts is None else expert_counts(mb.routed_experts, mb.attention_mask, counts.shape[1])
    seen.counts = counts if seen.counts is None else seen.counts + counts
    seen.entropy = entropy if seen.entropy is None else seen.entropy + entropy
    seen.load = load if seen.load is None else seen.load + load
    sums.router_tokens += int(mb.attention_mask.sum())


def _seen_tensors(seen: Seen) -> list[torch.Tensor]:
    return [seen.logps] + ([seen.counts, seen.entropy, seen.load] if seen.counts is not None else [])


def _step_metrics(sums: StepSums, grad_norm: float, lr: float, num_tokens: int, cfg: Config) -> dict:
    t = max(num_tokens, 1)
    metrics = {
        "loss/policy": sums.loss,
        "loss/clip_frac": sums.clipped / t,
        "loss/kl": sums.kl / t,
        "policy/entropy": sums.entropy / t,
        "grad_norm": grad_norm,
        "lr": lr,
    }
    if cfg.moe.aux_loss_coef > 0:
        metrics["moe/aux_loss"] = sums.aux
    if sums.replay_total:  # share of tokens whose router, left alone, would pick the replayed experts
        metrics["moe/replay_agreement"] = sums.replay_agree / sums.replay_total
    return metrics


def update(model, optim: Optim, batch: TrainBatch, cfg: Config) -> UpdateResult:
    """algo.epochs passes over the batch in mini-batches of algo.mini_batch_size sequences, one optimizer step each.

    The metrics are averaged over the steps (router statistics over the first epoch); the result also holds the
    trainer's logprobs from forwards made before any step of this update, and the rows they cover: all rows for
    a single step, the first mini-batch otherwise.
    """
    size = cfg.algo.mini_batch_size or len(batch)
    steps, router = [], RouterLoad()
    before_rows = torch.zeros(len(batch), dtype=torch.bool)
    before_logps, agreement = torch.zeros_like(batch.old_logps), None
    for epoch in range(cfg.algo.epochs):
        for start in range(0, len(batch), size):
            metrics, seen, sums = policy_step(model, optim, batch.slice(start, start + size), cfg)
            steps.append(metrics)
            if epoch == 0 and start == 0:  # before any step: the trainer against the engine
                agreement = sums.sampler_agree / sums.sampler_total if sums.sampler_total else None
                rows = min(size, len(batch))
                before_rows[:rows] = True
                before_logps[:rows, : seen.logps.shape[1]] = seen.logps
            if epoch == 0:
                router.add(seen, sums.router_tokens)
    return UpdateResult(_update_metrics(steps, router, agreement), before_logps, before_rows)


@dataclass
class RouterLoad:
    """Router counts summed over the first epoch's optimizer steps."""

    counts: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    tokens: int = 0

    def add(self, seen: Seen, tokens: int) -> None:
        if seen.counts is None:
            return
        self.counts = seen.counts if self.counts is None else self.counts + seen.counts
        self.entropy = seen.entropy if self.entropy is None else self.entropy + seen.entropy
        self.tokens += tokens


def _update_metrics(steps: list[dict], router: RouterLoad, agreement: float | None) -> dict:
    out = {k: sum(m[k] for m in steps) / len(steps) for k in steps[0] if k != "time/optimizer"}
    out["grad_norm_max"] = max(m["grad_norm"] for m in steps)
    out["optimizer_steps"] = len(steps)
    out["time/optimizer"] = sum(m["time/optimizer"] for m in steps)
    if "moe/bias_abs_mean" in steps[-1]:  # the bias the engines get, not a mean over the steps
        out["moe/bias_abs_mean"] = steps[-1]["moe/bias_abs_mean"]
    if router.counts is not None:
        out.update(router_metrics(router.counts, router.entropy, router.tokens))
    if agreement is not None:
        out["moe/routing_agreement"] = agreement
    return out
