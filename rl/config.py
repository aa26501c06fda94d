"""The one typed config of a purerl run: nested dataclasses, loaded from YAML by OmegaConf.

Defaults live here only. Each section checks its own values in `__post_init__` (so a config built in code is
checked too), `Config.__post_init__` checks the rules that span sections, and `load_config` rejects unknown
keys and wrong types before any work starts. An objective (`algo.advantage`, `algo.loss`) is a registered name
plus the settings of its own config dataclass: `algo.loss: gspo`, or `algo.loss: {name: gspo, clip_high: 4e-4}`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import OmegaConf

from rl.errors import ConfigError, require
from rl.objectives.advantages import ADVANTAGES
from rl.objectives.aggregation import AggMode
from rl.objectives.kl import KLEstimator
from rl.objectives.losses import LOSSES
from rl.objectives.shaping import overlong_buffer_ok
from rl.objectives.types import ObjectiveConfig

__all__ = ["Config", "ConfigError", "load_config", "to_yaml"]


def objective(registry, name: str):
    """A field holding a registered objective's settings, `name`'s defaults unless the config says otherwise;
    when loaded, built by the registry from its `name`."""
    return field(default_factory=lambda: settings_of(registry, name), metadata={"registry": registry})


def settings_of(registry, name: str, **values) -> ObjectiveConfig:
    """The settings of the objective `name` (its registered config class, or none), with these values."""
    return (registry.config_class(name) or ObjectiveConfig)(name=name, **values)


@dataclass
class LoraSettings:
    """LoRA adapters on the policy (rl/trainer/lora.py, through peft); rank 0 trains every weight instead."""

    rank: int = 0
    """Adapter rank r; 0: no adapters (full fine-tuning)."""
    alpha: float = 32.0
    """The update is (alpha / rank) * B A."""
    dropout: float = 0.0
    """Dropout on the adapters' input (0 keeps the trainer's logprobs those of the sampled policy)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Linear layers that get adapters, by name (`q_proj`, ...), or `all-linear` (every linear layer but the
    output layer and the routers); add `experts` for an MoE's fused expert weights."""

    def __post_init__(self):
        require(self.rank >= 0, "rank", "must be >= 0 (0: no adapters)")
        require(self.alpha > 0, "alpha", "must be > 0")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        require(self.rank == 0 or bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass
class ModelConfig:
    path: str = "models/tiny-moe-base"
    """Local Hugging Face folder, or a hub id when the hub is reachable."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the trainer and the engines. float32 keeps logprob parity tight."""
    experts_implementation: str = "purerl"
    """How the trainer computes an MoE model's experts: `purerl` (rl/trainer/experts.py: grouped matmuls whose
    gathers have gather backwards) or one of transformers' (`grouped_mm`, `eager`, `batched_mm`). Same values."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Adapters instead of full fine-tuning: only they train, the KL reference is the policy with them off."""

    def __post_init__(self):
        from rl.trainer.experts import implementations

        require(self.experts_implementation in implementations(), "experts_implementation",
                f"{self.experts_implementation!r} is not one of {implementations()}")


@dataclass
class DataSource:
    """One dataset read by its own format: a training source of data.mix, or an eval set."""

    path: str = ""
    """The prompts: a local file, a hub dataset name or a procedural task (as data.train)."""
    format: str = "purerl"
    """Its row format (as data.format)."""
    keys: dict[str, str] = field(default_factory=dict)
    """Its column renames (as data.keys)."""
    size: int = 0
    """Rows used: the first N (0: all)."""
    split: str = "train"
    """Split to read when `path` is a hub dataset name."""
    data_source: str = ""
    """Give every row this data_source (which picks its reward terms and names its metrics); empty: the rows'
    own."""

    def __post_init__(self):
        from rl.data.formats import FORMATS

        require(bool(self.path), "path", "must name the prompts")
        require(self.size >= 0, "size", "must be >= 0 (0: all rows)")
        require(self.format in FORMATS, "format", f"{self.format!r} is not one of {FORMATS.names()}")


@dataclass
class DataConfig:
    train: str = "rl/tasks/arithmetic/data/train.jsonl"
    """Training prompts: local .jsonl/.json/.parquet file, a hub dataset name, or a procedural task
    `reasoning_gym:<task>?size=N&seed=S`."""
    mix: list[DataSource] = field(default_factory=list)
    """More training sources, each read by its own format, whose rows join data.train's (a math + code run);
    every row keeps its data_source, which picks its reward terms (reward.sources)."""
    eval: str = "rl/tasks/arithmetic/data/heldout.jsonl"
    """Held-out prompts of base_accuracy / final_accuracy (one sample each, before and after training)."""
    format: str = "purerl"
    """Row format of `train` and `eval` (rl/data/formats.py): purerl, verl, gsm8k, math, conversational."""
    keys: dict[str, str] = field(default_factory=dict)
    """Column renames for the format, e.g. {prompt: query, answer: target}."""
    split: str = "train"
    """Split to read when `train`/`eval` is a hub dataset name."""
    template: str = "r1_zero"
    """Prompt template (rl/data/templates.py): r1_zero, chat (the tokenizer's own), none, or a string holding
    {question}."""
    system_prompt: str = ""
    """System message of the `chat` template (none when empty)."""
    eval_size: int = 256
    """Number of held-out problems scored (the first N of `eval`)."""
    seed: int = 0
    """Seed of the shuffle of the training prompts."""

    def __post_init__(self):
        from rl.data.formats import COLUMNS, FORMATS
        from rl.data.templates import check_template

        require(self.eval_size >= 1, "eval_size", "must be >= 1")
        require(self.format in FORMATS, "format", f"{self.format!r} is not one of {FORMATS.names()}")
        bad = sorted(set(self.keys) - set(COLUMNS))
        require(not bad, "keys", f"renames unknown fields {bad}; a format reads {list(COLUMNS)}")
        problem = check_template(self.template)
        require(problem is None, "template", problem or "")
@dataclass
class ToolsConfig:
    """Tool calls mid-answer (tool-integrated reasoning; docs/tools.md): the policy writes a fenced code block and
    opens an output block, the engine stops there, the tool runs the code, its output joins the context, and
    generation goes on. Tool tokens are context, never trained on."""

    name: str = ""
    """A registered tool (`python`: the code runs in the code reward's sandbox); empty: no tools."""
    max_calls: int = 4
    """Calls per answer; after the last, the stop is dropped and further code is not run."""
    max_output_tokens: int = 256
    """A call's output in the context, in tokens: its head and tail when longer."""
    timeout_s: float = 5.0
    """A call's wall time; past it the call is killed and its output says it timed out."""
    cpu_s: int = 5
    """A call's CPU seconds."""
    memory_mb: int = 512
    """A call's memory."""
    concurrency: int = 8
    """Calls run at once, per engine."""
    drop_void_turns: bool = True
    """SimpleTIR's filter: an answer with a void turn (it asked for a call's output with no closed code block
    before) is masked out of the step's training; `tools/void_rate` counts them."""
    code_open: str = "```python\n"
    """What opens the code block."""
    code_close: str = "```"
    """What closes it."""
    output_open: str = "```output"
    """What opens the output block: the engine's stop string."""
    output_close: str = "\n```\n"
    """What the appended output ends with."""

    def __post_init__(self):
        require(self.max_calls >= 1, "max_calls", "must be >= 1")
        require(self.max_output_tokens >= 1, "max_output_tokens", "must be >= 1")
        require(self.timeout_s > 0, "timeout_s", "must be > 0")
        require(self.cpu_s >= 1 and self.memory_mb >= 16, "cpu_s", "and memory_mb must be >= 1 s and >= 16 MB")
        require(self.concurrency >= 1, "concurrency", "must be >= 1")
        require(bool(self.output_open), "output_open", "must not be empty: it is the stop string of a call")
        if self.name:
            from rollout.tools import get_tool

            try:
                get_tool(self.name)
            except KeyError as e:
                require(False, "name", str(e))


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
    call_timeout_s: float = 1800.0
    """How long the driver waits on an engine's call (a step's generation, counted from its submission, or a
    sync) before it takes the engine for hung, kills it and starts it again like a dead one."""
    shared_memory_sync: bool = True
    """`purerl` weight transfer: engines on the driver's node read new weights from one file in /dev/shm instead
    of Ray's object store (falls back to the object store when /dev/shm lacks room)."""
    weight_transfer: str = "auto"
    """vLLM weight-transfer backend of the sync: `auto` (`purerl` on CPU; `ipc` for engines colocated with the
    trainer on GPUs, `nccl` otherwise) or a backend name vLLM knows (docs/cluster.md, "Weight sync")."""
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
    min_new_tokens: int = 0
    """Floor on generated tokens per sample: EOS and the stop strings are ignored until then (vLLM `min_tokens`).
    Equal to max_new_tokens, every answer is exactly that long: the fixed work of `make bench-sweep`."""
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
    request_seeds: bool = True
    """Seed each prompt's requests from (rollout.seed, the step, the round, the prompt's place in it): a step
    draws the same samples from the same weights whichever engine serves it, after an engine restart or a
    resume too; evaluations are seeded alike. Off: each engine's own random stream."""
    capture_routing: bool = True
    """MoE policies: record the experts the engine routed every token to (hooks on the engine's routers), for
    moe/routing_agreement and moe.routing_replay=vllm."""
    tensor_parallel_size: int = 1
    """GPUs each engine shards its model over (GPU engines; rollout.num_engines is the data parallelism)."""
    lora_sync: Literal["auto", "adapter", "merged"] = "auto"
    """With model.lora: `adapter` sends only the adapter's tensors and the engines apply it (vLLM's LoRA);
    `merged` sends the weights with the adapter merged in; `auto` is `adapter` where the engines can serve every
    targeted module, else `merged` (docs/lora.md)."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """rollout.tools.*: tool calls mid-answer; off unless rollout.tools.name is set."""
    quantization: Literal["none", "fp8"] = "none"
    """`fp8`: the engines run the policy in FP8 (GPU) while the trainer stays in bf16; the mismatch metrics and
    algo.tis_cap correct for the gap."""

    def __post_init__(self):
        require(self.n >= 2, "n", "must be >= 2 (GRPO needs a group)")
        require(self.num_engines >= 1, "num_engines", "must be >= 1")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
                f"must be in 0..rollout.max_new_tokens={self.max_new_tokens}")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.engine_cpus > 0, "engine_cpus", "must be > 0")
        require(self.engine_gpus >= 0, "engine_gpus", "must be >= 0")
        require(self.engine_threads >= 0, "engine_threads", "must be >= 0 (0: rollout.engine_cpus)")
        require(self.max_engine_restarts >= 0, "max_engine_restarts", "must be >= 0")
        require(self.call_timeout_s > 0, "call_timeout_s", "must be > 0")
        require(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1")
        require(self.engine_gpus in (0, self.tensor_parallel_size) or self.engine_gpus < 1, "engine_gpus",
                f"must be 0 (CPU), a share of one GPU, or rollout.tensor_parallel_size={self.tensor_parallel_size}")


@dataclass
class RewardTerm:
    verifier: str = "math"
    """Verifier: a built-in or `purerl.verifiers` entry-point name, a dotted path `pkg.mod:fn`, or a factory
    call with literal keyword arguments such as `format(partial_credit=0.2)`."""
    weight: float = 1.0
    """Weight of this term in the total reward."""

    timeout_s: float | None = None
    """Hard wall-time limit per scored item; null: the verifier's own limit (math 10 s, code 60 s, format 5 s)."""

    def __post_init__(self):
        require(self.timeout_s is None or self.timeout_s > 0, "timeout_s", "must be > 0 or null")


@dataclass
class RewardSource:
    """How the rows of one data source are scored."""

    terms: list[RewardTerm] = field(default_factory=list)
    """Verifiers and their weights for these rows."""
    accuracy_verifier: str = ""
    """The verifier whose full score counts one of these rows' samples as correct."""

    def __post_init__(self):
        require(len(self.terms) >= 1, "terms", "must name at least one verifier")
        require(self.accuracy_verifier in [t.verifier for t in self.terms], "accuracy_verifier",
                f"{self.accuracy_verifier!r} is not one of the terms' verifiers")


@dataclass
class SandboxConfig:
    min_isolation: Literal["allowlist", "namespaces", "rlimits"] = "allowlist"
    """The weakest isolation model-written code may run under (docs/rewards.md, "Sandbox"): `allowlist` (its own
    namespaces, and a root holding only the interpreter, the system libraries and `packages`), `namespaces` (the
    whole host read-only: its files and Unix sockets in view) or `rlimits` (no namespaces). On a machine that
    gives less, a run with code rewards stops at start, naming what is missing."""
    packages: list[str] = field(default_factory=list)
    """Packages programs may import (e.g. numpy): their folders, as installed here, join the sandbox's view."""

    def __post_init__(self):
        import importlib.util

        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        require(not missing, "packages", f"{missing} not importable here")


@dataclass
class RewardConfig:
    terms: list[RewardTerm] = field(
        default_factory=lambda: [RewardTerm("math", 1.0), RewardTerm("format", 0.1)]
    )
    """Verifiers and their weights; the total reward is the weighted sum. They score every row whose
    data_source has no entry in `sources`."""
    workers: int = 2
    """Processes that score rewards (each item is hard-killed at its term's time limit)."""
    accuracy_verifier: str = "math"
    """The verifier whose full score (1.0) counts a sample as correct (reward/accuracy, held-out eval)."""
    sources: dict[str, RewardSource] = field(default_factory=dict)
    """Terms per data source, selected by each row's `data_source` (verl's convention): one run can mix math,
    code and a plug-in task; metrics are split per source (reward/<source>/accuracy)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """What the code sandbox must give model-written programs, and the packages it lets them import."""
    max_error_rate: float = 0.5
    """A step whose share of masked samples (a verifier failed: `error`) is above this counts as failing: past
    half, most of the reward signal is missing."""
    max_error_steps: int = 3
    """After this many failing steps in a row the run stops with a checkpoint, naming the verifier and its most
    frequent error (more than one, so that a transient failure, one bad batch or a sandbox hiccup, passes)."""

    def __post_init__(self):
        require(len(self.terms) >= 1, "terms", "must name at least one verifier")
        require(self.workers >= 1, "workers", "must be >= 1")
        require(0 <= self.max_error_rate < 1, "max_error_rate", "must be in [0, 1)")
        require(self.max_error_steps >= 1, "max_error_steps", "must be >= 1")
        require(self.accuracy_verifier in [t.verifier for t in self.terms], "accuracy_verifier",
                f"{self.accuracy_verifier!r} is not one of reward.terms' verifiers")

    def source(self, name: str) -> RewardSource:
        """The terms that score rows of data source `name`: its own, or the default ones."""
        found = self.sources.get(name)
        return found if found is not None else RewardSource(self.terms, self.accuracy_verifier)


@dataclass
class AlgoConfig:
    advantage: ObjectiveConfig = objective(ADVANTAGES, "grpo")
    """Advantage estimator (rl/objectives/advantages.py): a name, or {name: ..., <its settings>}."""
    loss: ObjectiveConfig = objective(LOSSES, "ppo_clip")
    """Policy loss and its settings (rl/objectives/losses.py), e.g. {name: ppo_clip, clip_high: 0.28}."""
    loss_agg: AggMode = "seq_mean_token_mean"
    """How per-token losses reduce to a scalar (rl/objectives/aggregation.py)."""
    kl_coef: float = 0.0
    """beta of the KL penalty to the frozen reference; 0 loads no reference model."""
    kl_estimator: KLEstimator = "k3"
    """KL estimator (Schulman 2020)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus: the loss adds -entropy_coef x the per-token entropy of the policy, aggregated as
    the policy loss (algo.loss_agg). 0: the entropy is a metric only and gets no gradient."""
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

    def __post_init__(self):
        require(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        require(self.entropy_coef >= 0, "entropy_coef", "must be >= 0")
        require(not self.kl_in_reward or self.kl_coef > 0, "kl_in_reward", "needs algo.kl_coef > 0")
        require(self.epochs >= 1, "epochs", "must be >= 1")
        require(self.mini_batch_size >= 0, "mini_batch_size", "must be >= 0 (0 = the whole batch)")
        require(self.tis_cap is None or self.tis_cap > 0, "tis_cap", "must be > 0 or null")
        require(self.tis_cap is None or self.old_logprobs == "trainer", "tis_cap",
                "needs algo.old_logprobs=trainer (the weight is pi_trainer / pi_sampler)")
        require(self.dynamic_sampling_max_rounds >= 0, "dynamic_sampling_max_rounds", "must be >= 0")


@dataclass
class MoeConfig:
    aux_loss_coef: float = 0.0
    """Weight of the model's load-balancing loss (Switch-style) added to the policy loss; 0 disables it."""
    freeze_router: bool = False
    """Keep the routers' weights fixed during RL (their parameters get no gradient)."""
    routing_replay: Literal["off", "vllm", "trainer"] = "off"
    """`vllm` (or `true`): the trainer's forward passes use the experts the engine routed each sampled token to (rollout
    routing replay; needs rollout.capture_routing), the old-logprob forward too under algo.old_logprobs=trainer
    (R3 with TIS). `trainer`: they use the experts the trainer's pre-update forward chose (needs
    algo.old_logprobs=trainer, which records them; GSPO's routing replay)."""
    bias_update_rate: float = 0.0
    """DeepSeek-V3's auxiliary-loss-free balancing: after each optimizer step every router's correction bias moves
    by this rate against its experts' load in the step's tokens (b_i += rate * sign(mean load - load_i)); the load
    is the replayed routing's under moe.routing_replay. 0 keeps the bias frozen. Needs a router with a bias."""

    def __post_init__(self):
        require(self.aux_loss_coef >= 0, "aux_loss_coef", "must be >= 0")
        require(self.bias_update_rate >= 0, "bias_update_rate", "must be >= 0 (0 = frozen)")


@dataclass
class TrainerConfig:
    steps: int = 40
    """Optimizer steps (one rollout batch each)."""
    prompts_per_step: int = 16
    """Prompts per rollout batch; the batch holds prompts_per_step * rollout.n samples."""
    micro_batch_size: int = 32
    """Sequences per forward/backward when trainer.max_tokens_per_micro_batch is 0; gradients accumulate over
    the batch."""
    max_tokens_per_micro_batch: int = 0
    """Token budget of a micro-batch: each rank's sequences go first-fit decreasing into micro-batches of at most
    this many tokens (prompt + response; a longer sequence gets one of its own), for every trainer pass. 0:
    micro-batches of trainer.micro_batch_size rows."""
    logprob_chunk_tokens: int = 512
    """Tokens whose logits exist at once: the trainer scores from the final hidden states a chunk at a time
    (rl/trainer/chunked.py), so memory no longer grows with tokens x vocabulary (512: the fastest in make
    bench-long's sweep). 0: materialize every logit (the oracle, for comparison)."""
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
    """GPUs reserved by each trainer rank actor (1 on a GPU cluster; a share of one when colocated)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the trainer computes: `auto` is cuda when the rank has a GPU (trainer.rank_gpus > 0, or the driver
    sees one with trainer.ranks=1), else cpu."""
    mixed_precision: Literal["auto", "off", "bf16"] = "auto"
    """`bf16`: compute in bf16 with fp32 master weights and fp32 gradient reductions (FSDP2's MixedPrecisionPolicy
    under fsdp, autocast otherwise), and the engines in bf16. `auto`: bf16 on cuda, off on cpu."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward instead of keeping them."""
    call_timeout_s: float = 1800.0
    """trainer.ranks > 1: how long the driver waits on any rank's call (a forward, an update, a save) before it
    takes the rank for hung and rebuilds the group (run.max_restarts); the ranks' collectives time out 60 s
    later, so the driver acts first."""

    def __post_init__(self):
        require(self.steps >= 0, "steps", "must be >= 0")
        require(self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1")
        require(self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1")
        require(self.max_tokens_per_micro_batch >= 0, "max_tokens_per_micro_batch", "must be >= 0 (0: rows)")
        require(self.logprob_chunk_tokens >= 0, "logprob_chunk_tokens", "must be >= 0 (0: materialized logits)")
        require(self.lr > 0, "lr", "must be > 0")
        require(len(self.betas) == 2, "betas", "must have two values")
        require(self.ranks >= 1, "ranks", "must be >= 1")
        require(self.rank_cpus > 0, "rank_cpus", "must be > 0")
        require(self.rank_gpus >= 0, "rank_gpus", "must be >= 0")
        require(self.call_timeout_s > 0, "call_timeout_s", "must be > 0")
        require(self.sharding == "replicate" or self.ranks > 1, "sharding",
                "=fsdp needs trainer.ranks > 1 (one rank trains the whole policy in the driver)")


@dataclass
class ClusterConfig:
    colocate: bool = False
    """Engines and trainer ranks share placement bundles (engine i with rank i, half of the bundle each) instead of
    each taking its own."""
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Ray placement strategy of the bundles; SPREAD puts engines and ranks on different nodes where it can."""
    timeout_s: float = 120.0
    """How long to wait for the placement, or for a restarted engine, before failing with what is missing."""
    declared: str = ""
    """The GPU cluster the planner (--dry-run) places the run on, `<nodes>x<gpus per node>x<GPU>-<memory>GB` (e.g.
    2x8xH100-80GB); empty: the running Ray cluster's."""

    def __post_init__(self):
        require(self.timeout_s > 0, "timeout_s", "must be > 0")
        if self.declared:
            from rl.run.plan import PlanError, parse_cluster

            try:
                parse_cluster(self.declared)
            except PlanError as e:
                require(False, "declared", str(e).removeprefix("cluster.declared "))


@dataclass
class RunConfig:
    dir: str = ""
    """Run directory; empty means runs/<timestamp>."""
    eval_before: bool = True
    """Score the held-out set (summary.json base_accuracy) and the eval sets before training."""
    eval_after: bool = True
    """Score the held-out set (summary.json final_accuracy) and the eval sets after training."""
    save_checkpoint: bool = True
    """Write the final policy as a Hugging Face folder in <dir>/checkpoint."""
    save_every: int = 0
    """Write a resumable checkpoint (policy, optimizer, LR schedule, RNG, data cursor) every N steps; 0: never."""
    keep_last: int = 2
    """How many resumable checkpoints to keep in <dir>/checkpoints."""
    resume: bool = False
    """Continue the run in `dir` from its last complete checkpoint (make train RUN_DIR=... RESUME=1)."""
    supervise: bool = False
    """Run the driver under a supervisor that resumes the run after an abnormal exit, with no person acting
    (rl/run/supervise.py; make train SUPERVISE=1, and make submit's default). Needs save_every."""
    max_restarts: int = 3
    """How many times the supervisor restarts a dead driver, and the driver a lost trainer group (trainer.ranks
    > 1, rl/run/heal.py), before either gives up; 0: never."""

    def __post_init__(self):
        require(self.save_every >= 0, "save_every", "must be >= 0")
        require(self.max_restarts >= 0, "max_restarts", "must be >= 0")
        require(not self.supervise or self.save_every > 0, "supervise",
                "needs run.save_every > 0: a restart resumes the run from its last checkpoint")
        require(self.keep_last >= 1, "keep_last", "must be >= 1")
        require(not self.resume or bool(self.dir), "resume", "needs run.dir (RUN_DIR=...) naming the run to continue")


@dataclass
class EvalSet(DataSource):
    size: int = 256
    """Problems scored: the first N."""

    def __post_init__(self):
        super().__post_init__()
        require(self.size >= 1, "size", "must be >= 1")


@dataclass
class EvalConfig:
    every: int = 0
    """Also evaluate every K training steps (0: only before and after training, by run.eval_before/after)."""
    n: int = 4
    """Samples per problem at `temperature` (mean@n, pass@k, maj@k)."""
    temperature: float = 1.0
    """Sampling temperature of the n samples."""
    k: list[int] = field(default_factory=lambda: [1, 2, 4])
    """The k of pass@k and maj@k, each in 1..n."""
    greedy: bool = True
    """Also one greedy answer per problem (eval/<set>/greedy)."""
    sets: dict[str, EvalSet] = field(default_factory=lambda: {
        "heldout": EvalSet("rl/tasks/arithmetic/data/heldout.jsonl", size=256)})
    """The eval sets by name (metrics eval/<name>/..., files eval/<name>-step<k>.jsonl)."""

    def __post_init__(self):
        require(self.every >= 0, "every", "must be >= 0")
        require(self.n >= 1, "n", "must be >= 1")
        require(self.temperature > 0, "temperature", "must be > 0 (greedy answers: eval.greedy)")
        require(bool(self.k) and all(1 <= k <= self.n for k in self.k), "k", f"each k must be in 1..eval.n={self.n}")


@dataclass
class LogConfig:
    tensorboard: bool = True
    """Write TensorBoard event files of every metric into <run dir>/tensorboard."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb package; never required)."""
    wandb_project: str = "purerl"
    """The wandb project."""
    samples_every: int = 10
    """Every N steps, write a few prompts, completions, rewards and statuses to samples.jsonl (0: never)."""
    samples: int = 4
    """How many groups samples.jsonl shows each time (one completion each)."""
    verbose: bool = False
    """Show vLLM's and Ray's own logs on the console instead of only in <run dir>/logs/."""
    plot: bool = True
    """Draw the run's curves into <run dir>/plots/ when it ends (make plot RUN=<dir> does it any time)."""
    reflection_markers: list[str] = field(default_factory=list)
    """Phrases by which a response checks a candidate and revises it (a task's miss-and-retry words, e.g. "no,
    try"): response/reflection_rate is the share of responses holding any of them. Empty: not measured."""

    def __post_init__(self):
        require(self.samples_every >= 0, "samples_every", "must be >= 0")
        require(self.samples >= 1, "samples", "must be >= 1")
        require(all(isinstance(m, str) and m for m in self.reflection_markers), "reflection_markers",
                "must be non-empty strings")


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
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self):
        """The rules that span sections; each section has checked its own values already."""
        a, moe, r, t = self.algo, self.moe, self.rollout, self.trainer
        require(a.overlong != "soft" or overlong_buffer_ok(a.overlong_buffer, r.max_new_tokens), "algo.overlong_buffer",
                "must be in 1..rollout.max_new_tokens")
        require(moe.routing_replay != "vllm" or r.capture_routing, "moe.routing_replay",
                "=vllm needs rollout.capture_routing=true")
        require(moe.routing_replay != "trainer" or a.old_logprobs == "trainer", "moe.routing_replay",
                "=trainer needs algo.old_logprobs=trainer (that forward records the routing)")
        require((a.mini_batch_size or t.prompts_per_step * r.n) >= t.ranks, "algo.mini_batch_size",
                "(or the whole batch) must be >= trainer.ranks: every trainer rank needs rows")
        require(not (self.cluster.colocate and r.async_), "cluster.colocate",
                "cannot go with rollout.async: colocated engines sleep while the trainer works")
        require(r.quantization == "none" or r.engine_gpus > 0, "rollout.quantization",
                "=fp8 needs engines on GPUs (rollout.engine_gpus > 0)")
        require(not (self.model.lora.rank and r.lora_sync == "adapter" and moe.bias_update_rate > 0),
                "rollout.lora_sync", "=adapter sends no router bias: moe.bias_update_rate needs lora_sync=merged")
        require(not self.cluster.colocate or t.ranks > 1 or t.rank_gpus > 0, "cluster.colocate",
                "needs trainer.ranks > 1, or a trainer on a GPU (trainer.rank_gpus > 0: one rank in the driver "
                "shares engine 0's GPU)")



def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(tp: Any, value: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` and builds dataclasses; errors name the dotted key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if origin is Literal:
        if isinstance(value, bool) and ("off", "on")[value] in typing.get_args(tp):
            value = ("off", "on")[value]  # YAML 1.1 reads a bare off / on as a bool
        if value not in typing.get_args(tp):
            raise ConfigError(f"{value!r} is not one of {list(typing.get_args(tp))}", key)
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", key)
        (item_tp,) = typing.get_args(tp)
        return [_build(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", key)
        key_tp, item_tp = typing.get_args(tp)
        return {_build(key_tp, k, key): _build(item_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", key)
        return value
    raise ConfigError(f"unsupported type {tp}", key)  # a schema bug, not a user error


def _build_dataclass(tp: type, value: Any, key: str) -> Any:
    """One section: known keys only, each field built from its annotation (or its registry), then the section's
    own checks, whose errors are placed under `key`."""
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {value!r}", key or "config")
    fields = {f.name: f for f in dataclasses.fields(tp)}
    for k in value:
        if k not in fields:
            where = f"'{key}.{k}'" if key else f"'{k}'"
            raise ConfigError(f"unknown config key {where}; valid keys here: {', '.join(fields)}")
    hints = typing.get_type_hints(tp)
    kwargs = {}
    for k, v in value.items():
        sub = f"{key}.{k}" if key else k
        v = _over_default_entries(fields[k], v)
        registry = fields[k].metadata.get("registry")
        kwargs[k] = _build_objective(registry, v, sub, fields[k]) if registry else _build(hints[k], v, sub)
    try:
        return tp(**kwargs)
    except ConfigError as e:
        raise e.at(key) if key else e from None


def _over_default_entries(f: dataclasses.Field, value: Any) -> Any:
    """For a mapping of sections with default entries (eval.sets): an entry the config names keeps the default
    entry's settings it does not set (`eval.sets.heldout.size=8`); naming entries replaces the default mapping."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not isinstance(default, dict):
        return value
    return {k: {**dataclasses.asdict(default[k]), **v} if k in default and isinstance(v, dict)
            and dataclasses.is_dataclass(default[k]) else v for k, v in value.items()}


def _build_objective(registry, value: Any, key: str, f: dataclasses.Field) -> ObjectiveConfig:
    """`name` picks the registered objective (default: the field's), the other keys are its config's fields."""
    value = {"name": value} if isinstance(value, str) else value
    if not isinstance(value, dict):
        raise ConfigError(f"expected a name or a mapping with a name, got {value!r}", key)
    name = value.get("name", f.default_factory().name)
    if name not in registry:
        raise ConfigError(f"{name!r} is not one of {registry.names()}", key)
    return _build_dataclass(registry.config_class(name) or ObjectiveConfig, {**value, "name": name}, key)


def _objective_fields() -> list[tuple[str, str]]:
    """(section, field) of every objective: where a bare name is shorthand for {name: ...}."""
    hints = typing.get_type_hints(Config)
    return [(s.name, f.name) for s in dataclasses.fields(Config) for f in dataclasses.fields(hints[s.name])
            if f.metadata.get("registry")]


def _normalise(raw: dict) -> dict:
    """One source (the YAML or the overrides) in the schema's shape, so that sources merge key by key: a bare
    objective name becomes {name: ...}, `rollout.async` becomes `async_` (a Python keyword), and
    `moe.routing_replay: true/false` reads as vllm/off."""
    for section, name in _objective_fields():
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(name), str):
            node[name] = {"name": node[name]}
    rollout, moe = raw.get("rollout"), raw.get("moe")
    if isinstance(rollout, dict) and "async" in rollout:
        rollout["async_"] = rollout.pop("async")
    if isinstance(moe, dict) and isinstance(moe.get("routing_replay"), bool):
        moe["routing_replay"] = "vllm" if moe["routing_replay"] else "off"
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file + dotted overrides (`rollout.n=16`) -> checked Config."""
    sources = []
    if path is not None:
        sources.append(_read_yaml(Path(path)))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    sources += [_read_override(item) for item in overrides or []]  # one at a time: `algo.loss=gspo
    # algo.loss.clip_high=4e-4` must merge as {name: gspo} then {clip_high: ...}, not replace the name
    raw = [_normalise(OmegaConf.to_container(s, resolve=True) or {}) for s in sources]
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create({}), *raw), resolve=True)
    return _build(Config, merged, "")


def _read_yaml(path: Path):
    """The YAML file as OmegaConf reads it; a missing file, a syntax error or a key given twice is a ConfigError
    naming the file, the line and the column."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{path}: {_yaml_problem(e)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(node, dict) and not OmegaConf.is_dict(node):
        raise ConfigError(f"{path}: expected a mapping of sections (model:, rollout:, ...), got a list")
    return node


def _read_override(item: str):
    import yaml

    try:
        return OmegaConf.from_dotlist([item])
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"override {item!r}: its value is not valid YAML: {e.problem}") from None
    except Exception as e:  # omegaconf's own grammar errors for a malformed key
        raise ConfigError(f"override {item!r} is not of the form key=value: {str(e).splitlines()[0]}") from None


def _yaml_problem(e) -> str:
    """'line L, column C: problem (context)' from a YAML error's marks."""
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({e.context})" if e.context and e.context_mark is not mark else ""
    return f"{where}{e.problem}{context}"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))
