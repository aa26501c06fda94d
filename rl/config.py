"""The one typed config of a purerl run: nested dataclasses, loaded from YAML by OmegaConf.

Defaults live here only. `load_config` rejects unknown keys and wrong types before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or an invalid value."""


@dataclass
class ModelConfig:
    path: str = "models/tiny-moe-base"
    """Local Hugging Face folder, or a hub id when the hub is reachable."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the trainer and the engines. float32 keeps logprob parity tight."""
    experts_implementation: str = "purerl"
    """How the trainer computes an MoE model's experts: `purerl` (rl/experts.py: grouped matmuls whose gathers
    have gather backwards) or one of transformers' (`grouped_mm`, `eager`, `batched_mm`). Same values; speed only."""


@dataclass
class DataConfig:
    train: str = "rl/data/arithmetic/train.jsonl"
    """Training prompts: local .jsonl/.parquet file, or a hub dataset name."""
    eval: str = "rl/data/arithmetic/heldout.jsonl"
    """Held-out prompts scored before and after training."""
    split: str = "train"
    """Split to read when `train`/`eval` is a hub dataset name."""
    template: Literal["r1_zero", "none"] = "r1_zero"
    """Prompt template. `r1_zero` wraps the question in DeepSeek-R1-Zero's template."""
    eval_size: int = 256
    """Number of held-out problems scored (the first N of `eval`)."""
    seed: int = 0
    """Seed of the shuffle of the training prompts."""


@dataclass
class RolloutConfig:
    num_engines: int = 1
    """Number of Ray actors, each holding one vLLM engine."""
    engine_cpus: float = 1.0
    """CPUs reserved by each engine actor in Ray."""
    engine_gpus: float = 0.0
    """GPUs reserved by each engine actor (0 on CPU)."""
    engine_threads: int = 0
    """CPU threads each engine computes with; 0 means `engine_cpus` (what Ray gives an actor). More than
    engine_cpus pays in synchronous runs, where the trainer idles while the engines generate; with
    `rollout.async` the trainer computes meanwhile, so keep 0 there."""
    max_engine_restarts: int = 3
    """How many times in a run a dead engine is started again (its unfinished prompts are sent again)."""
    shared_memory_sync: bool = True
    """Engines on the driver's node read new weights from one file in /dev/shm instead of Ray's object store
    (falls back to the object store when /dev/shm lacks room)."""
    async_: bool = False
    """Config key `rollout.async`: generate step k+1's groups while step k trains (one step off-policy)."""
    n: int = 8
    """Group size G: samples per prompt."""
    temperature: float = 1.0
    """Sampling temperature (also applied to the trainer's logits)."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    max_new_tokens: int = 64
    """Cap on generated tokens per sample."""
    stop: list[str] = field(default_factory=lambda: ["</answer>"])
    """Stop strings; the stop string is kept in the output so the format reward can see it."""
    kv_cache_gib: int = 1
    """KV cache size per engine on CPU, in whole GiB (VLLM_CPU_KVCACHE_SPACE)."""
    gpu_memory_utilization: float = 0.3
    """Share of device memory an engine may take on GPU."""
    enforce_eager: bool = True
    """Skip graph capture / compilation; faster start for tiny models."""
    seed: int = 0
    """Seed of the engines' samplers."""
    capture_routing: bool = True
    """MoE policies: record the experts the engine routed every token to (hooks on the engine's routers), for
    moe/routing_agreement and moe.routing_replay=vllm."""


@dataclass
class RewardTerm:
    verifier: str = "math"
    """Verifier: a built-in or `purerl.verifiers` entry-point name, a dotted path `pkg.mod:fn`, or a factory
    call with literal keyword arguments such as `format(partial_credit=0.2)`."""
    weight: float = 1.0
    """Weight of this term in the total reward."""


@dataclass
class RewardConfig:
    terms: list[RewardTerm] = field(
        default_factory=lambda: [RewardTerm("math", 1.0), RewardTerm("format", 0.1)]
    )
    """Verifiers and their weights; the total reward is the weighted sum."""
    workers: int = 2
    """Processes that score rewards (each item is hard-killed at `timeout_s`)."""
    timeout_s: float = 5.0
    """Wall-time limit per item."""
    accuracy_verifier: str = "math"
    """The verifier whose full score (1.0) counts a sample as correct (reward/accuracy, held-out eval)."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    """Advantage estimator (rl/advantages.py registry)."""
    loss: str = "ppo_clip"
    """Policy loss (rl/losses.py registry)."""
    loss_agg: str = "seq_mean_token_mean"
    """How per-token losses reduce to a scalar (rl/aggregation.py)."""
    clip_low: float = 0.2
    """Lower clip range: ratio >= 1 - clip_low."""
    clip_high: float = 0.2
    """Upper clip range: ratio <= 1 + clip_high (DAPO clip-higher when > clip_low)."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 for negative advantages; null disables it."""
    kl_coef: float = 0.0
    """beta of the KL penalty to the frozen reference; 0 loads no reference model."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (Schulman 2020)."""
    kl_in_reward: bool = False
    """Subtract kl_coef * (summed per-token KL) from each sample's reward instead of adding KL to the loss."""
    epochs: int = 1
    """Passes over each rollout batch (PPO epochs); the old logprobs stay fixed across them."""
    mini_batch_size: int = 0
    """Sequences per optimizer step; 0 means the whole rollout batch (one step per epoch)."""
    old_logprobs: Literal["sampler", "trainer"] = "sampler"
    """Denominator of the ratio: vLLM's sampling logprobs, or the trainer's recomputed ones (one extra forward)."""
    tis_cap: float | None = None
    """Truncated importance weight min(pi_trainer / pi_sampler, C) on every token; needs old_logprobs=trainer."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts until the batch is full."""
    dynamic_sampling_max_rounds: int = 4
    """Cap on extra sampling rounds per step; the step trains on what it has when the cap is hit."""
    overlong: Literal["none", "mask", "soft"] = "none"
    """Truncated samples: `mask` leaves them out of the loss and the group statistics; `soft` adds DAPO's length penalty."""
    overlong_buffer: int = 16
    """`soft`: the penalty ramps from 0 to -overlong_penalty over the last overlong_buffer tokens."""
    overlong_penalty: float = 1.0
    """`soft`: the penalty at the length limit."""


@dataclass
class MoeConfig:
    aux_loss_coef: float = 0.0
    """Weight of the model's load-balancing loss (Switch-style) added to the policy loss; 0 disables it."""
    freeze_router: bool = False
    """Keep the routers' weights fixed during RL (their parameters get no gradient)."""
    routing_replay: Literal["off", "vllm", "trainer"] = "off"
    """`vllm` (or `true`): the trainer's forward passes use the experts the engine routed each sampled token to (rollout
    routing replay; needs rollout.capture_routing). `trainer`: they use the experts the trainer's pre-update
    forward chose (needs algo.old_logprobs=trainer, which records them; GSPO's routing replay)."""


@dataclass
class TrainerConfig:
    steps: int = 40
    """Optimizer steps (one rollout batch each)."""
    prompts_per_step: int = 16
    """Prompts per rollout batch; the batch holds prompts_per_step * rollout.n samples."""
    micro_batch_size: int = 32
    """Sequences per forward/backward; gradients accumulate over the batch."""
    lr: float = 5e-5
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Max global gradient norm."""
    threads: int = 0
    """torch threads of the trainer; 0 keeps torch's default."""
    seed: int = 0
    """Seed of torch in the trainer."""
    ranks: int = 1
    """Trainer ranks. 1 trains in the driver process; N > 1 runs N Ray actors in one torch.distributed group
    (gloo; the trainer computes on CPU), each on its share of every mini-batch, gradients summed over the ranks."""
    sharding: Literal["replicate", "fsdp"] = "replicate"
    """trainer.ranks > 1: `replicate` keeps the whole policy and optimizer state on every rank and sums gradients
    with one all-reduce per step; `fsdp` shards parameters, gradients and optimizer state over the ranks with
    FSDP2 (`fully_shard`, one unit per decoder layer), gathering each layer only while it computes."""
    pack_sequences: bool = True
    """Lay the padded sequences of each micro-batch end to end in fewer rows for the trainer's forward passes
    (rl/packing.py): same logprobs, less padding computed. Off while routing is recorded or replayed."""
    rank_cpus: float = 1.0
    """CPUs reserved by each trainer rank actor (also its torch threads unless trainer.threads is set)."""
    rank_gpus: float = 0.0
    """GPUs reserved by each trainer rank actor (placement only: the trainer does not move the policy to a GPU yet)."""


@dataclass
class ClusterConfig:
    colocate: bool = False
    """Engines and trainer ranks share placement bundles (engine i with rank i, half of the bundle each) instead of
    each taking its own."""
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Ray placement strategy of the bundles; SPREAD puts engines and ranks on different nodes where it can."""
    timeout_s: float = 120.0
    """How long to wait for the placement, or for a restarted engine, before failing with what is missing."""


@dataclass
class RunConfig:
    dir: str = ""
    """Run directory; empty means runs/<timestamp>."""
    eval_before: bool = True
    """Score the held-out set before training (summary.json base_accuracy)."""
    eval_after: bool = True
    """Score the held-out set after training (summary.json final_accuracy)."""
    save_checkpoint: bool = True
    """Write the final policy as a Hugging Face folder in <dir>/checkpoint."""
    save_every: int = 0
    """Write a resumable checkpoint (policy, optimizer, LR schedule, RNG, data cursor) every N steps; 0: never."""
    keep_last: int = 2
    """How many resumable checkpoints to keep in <dir>/checkpoints."""
    resume: bool = False
    """Continue the run in `dir` from its last complete checkpoint (make train RUN_DIR=... RESUME=1)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    moe: MoeConfig = field(default_factory=MoeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(tp: Any, value: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` and builds dataclasses; errors name the dotted key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key or 'config'}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for k in value:
            if k not in names:
                where = f"'{key}.{k}'" if key else f"'{k}'"
                raise ConfigError(f"unknown config key {where}; valid keys here: {', '.join(names)}")
        kwargs = {k: _build(hints[k], v, f"{key}.{k}" if key else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_build(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # a schema bug, not a user error


def validate(cfg: Config) -> Config:
    """Value checks that types cannot express."""
    from rl.advantages import ADVANTAGES
    from rl.aggregation import AGG_MODES
    from rl.experts import implementations
    from rl.losses import LOSSES

    a = cfg.algo
    checks = [
        (cfg.model.experts_implementation in implementations(),
         f"model.experts_implementation {cfg.model.experts_implementation!r} is not one of {implementations()}"),
        (a.advantage in ADVANTAGES, f"algo.advantage {a.advantage!r} is not one of {ADVANTAGES.names()}"),
        (a.loss in LOSSES, f"algo.loss {a.loss!r} is not one of {LOSSES.names()}"),
        (a.loss_agg in AGG_MODES, f"algo.loss_agg {a.loss_agg!r} is not one of {list(AGG_MODES)}"),
        (a.clip_low >= 0 and a.clip_high >= 0, "algo.clip_low and algo.clip_high must be >= 0"),
        (a.dual_clip is None or a.dual_clip > 1, "algo.dual_clip must be > 1 or null"),
        (not (a.loss == "cispo" and a.dual_clip is not None), "algo.dual_clip must be null with algo.loss=cispo"),
        (a.epochs >= 1, "algo.epochs must be >= 1"),
        (a.mini_batch_size >= 0, "algo.mini_batch_size must be >= 0 (0 = the whole batch)"),
        (a.tis_cap is None or a.tis_cap > 0, "algo.tis_cap must be > 0 or null"),
        (a.tis_cap is None or a.old_logprobs == "trainer",
         "algo.tis_cap needs algo.old_logprobs=trainer (the weight is pi_trainer / pi_sampler)"),
        (not (a.kl_in_reward and a.kl_coef == 0), "algo.kl_in_reward needs algo.kl_coef > 0"),
        (a.dynamic_sampling_max_rounds >= 0, "algo.dynamic_sampling_max_rounds must be >= 0"),
        (0 < a.overlong_buffer <= cfg.rollout.max_new_tokens,
         "algo.overlong_buffer must be in 1..rollout.max_new_tokens"),
        (cfg.moe.aux_loss_coef >= 0, "moe.aux_loss_coef must be >= 0"),
        (cfg.run.save_every >= 0 and cfg.run.keep_last >= 1, "run.save_every must be >= 0 and run.keep_last >= 1"),
        (not cfg.run.resume or bool(cfg.run.dir), "run.resume needs run.dir (RUN_DIR=...) naming the run to continue"),
        (cfg.moe.routing_replay != "vllm" or cfg.rollout.capture_routing,
         "moe.routing_replay=vllm needs rollout.capture_routing=true"),
        (cfg.moe.routing_replay != "vllm" or a.old_logprobs == "sampler",
         "moe.routing_replay=vllm takes the ratio against the engine's logprobs: set algo.old_logprobs=sampler"),
        (cfg.moe.routing_replay != "trainer" or a.old_logprobs == "trainer",
         "moe.routing_replay=trainer needs algo.old_logprobs=trainer (that forward records the routing)"),
        (cfg.rollout.n >= 2, "rollout.n must be >= 2 (GRPO needs a group)"),
        (cfg.rollout.num_engines >= 1, "rollout.num_engines must be >= 1"),
        (cfg.rollout.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1"),
        (cfg.rollout.temperature > 0, "rollout.temperature must be > 0"),
        (0 < cfg.rollout.top_p <= 1, "rollout.top_p must be in (0, 1]"),
        (cfg.trainer.ranks >= 1, "trainer.ranks must be >= 1"),
        ((a.mini_batch_size or cfg.trainer.prompts_per_step * cfg.rollout.n) >= cfg.trainer.ranks,
         "every trainer rank needs rows: algo.mini_batch_size (or the whole batch) must be >= trainer.ranks"),
        (cfg.rollout.engine_cpus > 0 and cfg.trainer.rank_cpus > 0, "rollout.engine_cpus and trainer.rank_cpus must be > 0"),
        (cfg.rollout.engine_threads >= 0, "rollout.engine_threads must be >= 0 (0: rollout.engine_cpus)"),
        (cfg.trainer.sharding == "replicate" or cfg.trainer.ranks > 1,
         "trainer.sharding=fsdp needs trainer.ranks > 1 (one rank trains the whole policy in the driver)"),
        (cfg.rollout.engine_gpus >= 0 and cfg.trainer.rank_gpus >= 0, "rollout.engine_gpus and trainer.rank_gpus must be >= 0"),
        (cfg.rollout.max_engine_restarts >= 0, "rollout.max_engine_restarts must be >= 0"),
        (not cfg.cluster.colocate or cfg.trainer.ranks > 1,
         "cluster.colocate needs trainer.ranks > 1 (a single rank trains in the driver process, outside the cluster)"),
        (cfg.cluster.timeout_s > 0, "cluster.timeout_s must be > 0"),
        (cfg.trainer.prompts_per_step >= 1, "trainer.prompts_per_step must be >= 1"),
        (cfg.trainer.micro_batch_size >= 1, "trainer.micro_batch_size must be >= 1"),
        (cfg.trainer.lr > 0, "trainer.lr must be > 0"),
        (cfg.trainer.steps >= 0, "trainer.steps must be >= 0"),
        (len(cfg.trainer.betas) == 2, "trainer.betas must have two values"),
        (cfg.algo.kl_coef >= 0, "algo.kl_coef must be >= 0"),
        (len(cfg.reward.terms) >= 1, "reward.terms must name at least one verifier"),
        (cfg.reward.workers >= 1, "reward.workers must be >= 1"),
        (cfg.data.eval_size >= 1, "data.eval_size must be >= 1"),
        (
            cfg.reward.accuracy_verifier in [t.verifier for t in cfg.reward.terms],
            f"reward.accuracy_verifier {cfg.reward.accuracy_verifier!r} is not one of reward.terms' verifiers",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file + dotted overrides (`rollout.n=16`) -> validated Config."""
    merged = OmegaConf.create({})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        merged = OmegaConf.merge(merged, OmegaConf.load(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    if overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    raw = OmegaConf.to_container(merged, resolve=True)
    rollout = raw.get("rollout")
    if isinstance(rollout, dict) and "async" in rollout:  # `async` is a Python keyword: the field is async_
        rollout["async_"] = rollout.pop("async")
    moe = raw.get("moe")
    if isinstance(moe, dict) and isinstance(moe.get("routing_replay"), bool):  # true/false read as vllm/off
        moe["routing_replay"] = "vllm" if moe["routing_replay"] else "off"
    return validate(_build(Config, raw, ""))


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))
