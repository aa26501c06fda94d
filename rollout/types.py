"""What the rollout stage hands to the rest of the pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class EngineSpec:
    """How to start one vLLM engine."""

    model_path: str
    dtype: str = "float32"
    seed: int = 0
    enforce_eager: bool = True
    kv_cache_gib: int = 1  # CPU: the KV cache size (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.3
    max_model_len: int = 256
    threads: int = 0  # > 0: the CPU threads it computes with
    weight_transfer: str = "purerl"  # vLLM weight-transfer backend: `purerl` (CPU), `nccl`, `ipc`, ...
    tensor_parallel_size: int = 1
    quantization: str | None = None  # "fp8": the engine runs the policy in FP8 (GPU)
    sleep_mode: bool = False  # vLLM's sleep mode, for engines colocated with the trainer (GPU)
    native_routing: bool = False  # vLLM returns the routed experts itself (Model Runner V2, GPU)
    lora_rank: int = 0  # > 0: vLLM's LoRA on, for adapters up to this rank (model.lora with rollout.lora_sync=adapter)


def stable_seed(*key) -> int:
    """A stable 31-bit seed for `key` (the run's seed, then what names the call or the request): the same on
    every machine and every Python run."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


@dataclass(frozen=True)
class ToolSpec:
    """Tool calls mid-answer (rollout.tools; the loop: rollout/tools/turns.py)."""

    name: str  # a registered tool (rollout.tools.register_tool)
    max_calls: int = 4  # calls per answer; after the last, code is text
    max_output_tokens: int = 256  # a call's output in the context, cut to head and tail
    timeout_s: float = 5.0  # a call's wall time
    cpu_s: int = 5
    memory_mb: int = 512
    concurrency: int = 8  # calls run at once, per engine
    code_open: str = "```python\n"
    code_close: str = "```"
    output_open: str = "```output"  # the stop string of a call
    output_close: str = "\n```\n"


@dataclass(frozen=True)
class Sampling:
    """How an engine samples a call's groups."""

    n: int  # samples per prompt (the group size G)
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...] = ()  # stop strings, kept in the output so the format reward can see them
    # Set: each prompt's requests draw from their own generator, seeded from (seed, the prompt's position in the
    # call), so the samples depend on the weights and this seed only, not on which engine draws them or how often
    # it was started (rollout.request_seeds). None: the engine's own random stream.
    seed: int | None = None
    min_new_tokens: int = 0  # EOS and stop strings are ignored before this many tokens (fixed-length benchmarks)
    tools: ToolSpec | None = None  # answers may call a tool mid-answer


@dataclass
class Completion:
    """One sampled answer: its tokens, text, per-token sampling logprobs and why it stopped."""

    token_ids: list[int]
    text: str
    logprobs: list[float]  # (T,) logprob of each generated token under the sampler
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    # (prompt_len + T - 1, layers, k) int16: the experts the engine routed every fed token to (MoE, capture on)
    routed_experts: torch.Tensor | None = None
    # per token: 1 sampled by the policy, 0 written by a tool (rollout/tools); None: every token was sampled
    tool_mask: list[int] | None = None
    tool_calls: tuple[str, ...] = ()  # how each call ended: "ok", "error", "timeout", "failed"
    tool_seconds: tuple[float, ...] = ()  # each call's wall time
    void_turn: bool = False  # it asked for a call's output with no closed code block before

    @property
    def generated(self) -> int:
        """The tokens the policy sampled (tool output excluded)."""
        return len(self.token_ids) if self.tool_mask is None else sum(self.tool_mask)


@dataclass
class RolloutGroup:
    """G completions of one prompt (the GRPO group)."""

    prompt_index: int  # dataset index of the prompt (the data ledger)
    prompt_ids: list[int]
    completions: list[Completion] = field(default_factory=list)
    engine: int = -1  # which engine produced the group
    weight_version: int = -1  # the weight version the engine held while it sampled (rl.sync.weights: the step its weights come from)
    engine_idle_s: float = 0.0  # with tools: this group's share of its engine's time with nothing to decode while calls ran
