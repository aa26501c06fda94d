"""The GPU planner: checks a run before it starts, with no GPU. `python -m rl.train --config X --dry-run` (or
`make plan CONFIG=X`) validates the config, reads the model's config.json (no weights) and the dataset's schema,
places the engines and trainer ranks on the declared cluster (`cluster.declared: 2x8xH100-80GB`) or the running
Ray one, and estimates each GPU's memory: the trainer's parameters, gradients, optimizer state and activations
under its sharding; each engine's weights and KV cache; with colocation, the peak. A run that cannot fit fails
naming the GPU, the resource and the numbers. How each figure is estimated: docs/gpu.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rl.errors import UserError

GIB = 1 << 30
GPU_MEMORY_GIB = {"H100-80GB": 80, "H200-141GB": 141, "H20-96GB": 96, "A100-80GB": 80, "A100-40GB": 40,
                  "L40S-48GB": 48, "B200-180GB": 180}
CUDA_CONTEXT_GIB = 0.75  # what each process's CUDA context and allocator take before any tensor
ENGINE_RUNTIME_GIB = 1.5  # a vLLM engine's activations, sampler and graph buffers, outside weights and KV cache


class PlanError(UserError):
    """The run does not fit: the message names the GPU, what it holds and the numbers."""


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    gpu: str
    memory_gib: float

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def parse_cluster(spec: str) -> Cluster:
    """`<nodes>x<gpus per node>x<GPU>`, e.g. `2x8xH100-80GB`; the GPU is one of GPU_MEMORY_GIB or `<name>-<N>GB`."""
    m = re.fullmatch(r"(\d+)x(\d+)x([A-Za-z0-9]+-(\d+)GB)", spec.strip())
    if m is None:
        raise PlanError(f"cluster.declared {spec!r} is not <nodes>x<gpus per node>x<GPU>-<memory>GB, e.g. 2x8xH100-80GB")
    gpu = m.group(3)
    return Cluster(int(m.group(1)), int(m.group(2)), gpu, GPU_MEMORY_GIB.get(gpu, float(m.group(4))))


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimates need of a model's config.json."""

    params: int  # every parameter
    active_params: int  # the parameters one token uses (MoE: top-k experts of each layer)
    layers: int
    hidden: int
    vocab: int
    kv_bytes_per_token: int  # bf16 K and V of every layer
    activation_width: int  # per token and layer: the widths an eager forward keeps for the backward
    largest_layer_params: int  # what FSDP gathers at once
    positions: int = 0  # max_position_embeddings (0: not stated)


def _head_dim(c: dict) -> int:
    return int(c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])


def _attention_params(c: dict) -> int:
    h, d = c["hidden_size"], _head_dim(c)
    q, kv = c["num_attention_heads"] * d, c.get("num_key_value_heads", c["num_attention_heads"]) * d
    bias = (q + 2 * kv) if c.get("attention_bias") else 0
    norms = 2 * d if c.get("model_type") == "qwen3_moe" else 2 * q if c.get("model_type") == "olmoe" else 0
    return h * (q + 2 * kv) + q * h + bias + norms  # q, k, v, o (+ biases, q/k norms)


def _experts(c: dict) -> int:
    """Routed experts per MoE layer: `num_experts` (Qwen-MoE, OLMoE, hub configs) or `num_local_experts` (Mixtral,
    and the Qwen3-MoE configs transformers 5 writes); 0 for a dense model."""
    return c.get("num_experts") or c.get("num_local_experts") or 0


def _moe_layer(c: dict, i: int) -> bool:
    if not _experts(c):
        return False
    step = c.get("decoder_sparse_step", 1) or 1
    return i not in set(c.get("mlp_only_layers") or []) and (i + 1) % step == 0


def _mlp_params(c: dict, moe: bool, active: bool = False) -> int:
    h = c["hidden_size"]
    if not moe:
        return 3 * h * c["intermediate_size"]  # gate, up, down
    inter = c.get("moe_intermediate_size") or c["intermediate_size"]
    experts = c["num_experts_per_tok"] if active else _experts(c)
    shared = 3 * h * c.get("shared_expert_intermediate_size", 0) + (h if c.get("shared_expert_intermediate_size") else 0)
    return experts * 3 * h * inter + h * _experts(c) + shared  # experts, router, shared expert and its gate


def adapter_params(c: dict, rank: int, targets: list[str]) -> int:
    """Parameters of LoRA adapters of `rank` (rl/trainer/lora.py): r x (in + out) per adapted linear layer (the
    attention's q/k/v/o, a dense MLP's or shared expert's gate/up/down; never a router or the output layer), and
    for `experts` r x E x (in + out) per fused expert weight (peft's target_parameters)."""
    h, d = c["hidden_size"], _head_dim(c)
    q, kv = c["num_attention_heads"] * d, c.get("num_key_value_heads", c["num_attention_heads"]) * d
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
    every = "all-linear" in targets
    total = 0
    for i in range(c["num_hidden_layers"]):
        moe = _moe_layer(c, i)
        inter = c.get("shared_expert_intermediate_size", 0) if moe else c["intermediate_size"]
        mlp = {"gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)} if inter else {}
        for name, (a, b) in (shapes | mlp).items():
            total += rank * (a + b) if every or name in targets else 0
        if moe and "experts" in targets:
            e, mi = _experts(c), c.get("moe_intermediate_size") or c["intermediate_size"]
            total += rank * e * ((h + 2 * mi) + (mi + h))  # gate_up (in h, out 2I) and down (in I, out h)
    return total


def _activation_width(c: dict, moe: bool) -> int:
    """Values an eager forward keeps per token for one layer's backward: the attention's input, q/k/v, their normed
    and rotated copies, its output and the residual (4h + 4(q + kv)); the MLP's norm, gate/up, activation and
    output, or, for an MoE layer, the k copies of the token's input and output and its experts' gate/up and
    activation, and the router logits. Checked against the measured memory of make bench-long (docs/gpu.md)."""
    h, d = c["hidden_size"], _head_dim(c)
    q, kv = c["num_attention_heads"] * d, c.get("num_key_value_heads", c["num_attention_heads"]) * d
    attention = 4 * h + 4 * (q + kv)
    if not moe:
        return attention + 2 * h + 4 * c["intermediate_size"]
    k, inter = c["num_experts_per_tok"], c.get("moe_intermediate_size") or c["intermediate_size"]
    shared = 4 * c.get("shared_expert_intermediate_size", 0)
    return attention + 2 * h + 3 * k * (h + inter) + _experts(c) + shared


def model_shape(c: dict) -> ModelShape:
    """Parameter counts and widths from a transformers config.json (Qwen2/3, Qwen2/3-MoE, OLMoE, Mixtral, Llama)."""
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    embed = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    attn = _attention_params(c) + 2 * h  # + the two layer norms
    per_layer = [attn + _mlp_params(c, _moe_layer(c, i)) for i in range(layers)]
    active = [attn + _mlp_params(c, _moe_layer(c, i), active=True) for i in range(layers)]
    kv_heads = c.get("num_key_value_heads", c["num_attention_heads"])
    width = max(_activation_width(c, _moe_layer(c, i)) for i in range(layers))
    return ModelShape(sum(per_layer) + embed + h, sum(active) + embed + h, layers, h, vocab,
                      2 * layers * kv_heads * _head_dim(c) * 2, width, max(per_layer),
                      c.get("max_position_embeddings") or 0)


def read_model_config(path: str) -> dict:
    """config.json of a local model folder, a JSON file, or (hub ids) purerl's copy under configs/models/."""
    p = Path(path)
    candidates = [p / "config.json", p] if p.exists() else [Path("configs/models") / f"{p.name.lower()}.json"]
    for c in candidates:
        if c.is_file():
            return json.loads(c.read_text())
    raise PlanError(f"model {path!r}: no config.json found (tried {', '.join(map(str, candidates))}); give a local "
                    f"folder, or put its config.json at configs/models/{p.name.lower()}.json")


@dataclass
class GPU:
    """One GPU of the plan and what it holds, in GiB."""

    node: int
    index: int
    parts: dict[str, float] = field(default_factory=dict)  # "trainer rank 0: optimizer state" -> GiB
    peak_gib: float = 0.0
    note: str = ""

    def name(self) -> str:
        return f"node {self.node} GPU {self.index}"


@dataclass(frozen=True)
class MicroBatch:
    """One trainer micro-batch as the planner sizes it."""

    tokens: int
    checkpointing: bool = False  # trainer.activation_checkpointing
    chunk_tokens: int = 0  # trainer.logprob_chunk_tokens; 0: materialized logits
    value_bytes: int = 2  # per activation: 2 in bf16 mixed precision, 4 in fp32


@dataclass(frozen=True)
class Lora:
    """model.lora as the planner counts it: the adapters' parameters and the frozen base's bytes per parameter."""

    params: int  # adapter parameters (adapter_params)
    base_bytes: int = 2  # model.dtype of the frozen base: 2 (bfloat16) or 4 (float32)


def trainer_gib(shape: ModelShape, ranks: int, sharded: bool, mb: MicroBatch, reference: bool,
                lora: Lora | None = None) -> dict[str, float]:
    """One trainer rank with fp32 master weights and AdamW: weights 4 B, gradients 4 B and Adam's two moments 8 B
    per parameter (1/ranks of it under FSDP, plus two gathered layers); with LoRA, the frozen base in its dtype and
    those 16 B per adapter parameter only, and no reference (the base is it); the activations of one micro-batch;
    the output layer's logits, of one chunk (rl/trainer/chunked.py) or of every token; the frozen reference."""
    share = 1 / ranks if sharded else 1.0
    if lora is None:
        out = {"weights (fp32)": 4 * shape.params * share, "gradients (fp32)": 4 * shape.params * share,
               "optimizer state (Adam, fp32)": 8 * shape.params * share}
    else:
        out = {"frozen base": lora.base_bytes * shape.params * share,
               "adapters, gradients, Adam (fp32)": 16 * lora.params * share}
    if sharded:
        out["gathered layers"] = 2 * mb.value_bytes * shape.largest_layer_params
    kept = shape.hidden if mb.checkpointing else shape.activation_width  # per token and layer
    recomputed = shape.activation_width if mb.checkpointing else 0  # the one layer being recomputed
    out["activations"] = mb.value_bytes * mb.tokens * (kept * shape.layers + recomputed)
    out.update(logits_bytes(shape, mb.tokens, mb.chunk_tokens, mb.value_bytes))
    if reference and lora is None:
        out["reference (bf16)"] = 2 * shape.params * share
    return {k: v / GIB for k, v in out.items()}


def logits_bytes(shape: ModelShape, tokens: int, chunk_tokens: int, value_bytes: int) -> dict[str, float]:
    """The output layer's share. Materialized (chunk 0): per token and vocabulary entry the logits, their fp32
    log-softmax and its gradient. Chunked: one chunk's fp32 logits and one fp32 temporary of it (the log-sum-exp's,
    then the probabilities), in bf16 also the chunk's bf16 logits and gradient; the fp32 weight-gradient
    accumulator; and per scored token its final hidden state and log-normaliser."""
    if chunk_tokens == 0:
        return {"logits and log-softmax": tokens * shape.vocab * (value_bytes + 4 + 4)}
    per_entry = 8 + (2 * value_bytes if value_bytes < 4 else 0)
    return {"logits (one chunk)": min(chunk_tokens, tokens) * shape.vocab * per_entry + 4 * shape.vocab * shape.hidden
            + tokens * (value_bytes * shape.hidden + 8)}


def longest_response(fits, prompt_tokens: int, budget: int, limit: int = 1 << 21) -> int:
    """The longest response (at most `limit`) whose sequence the trainer can hold: a sequence past the token budget
    is a micro-batch of its own, so the rank's memory `fits(tokens)` decides. 0 when not even the budget fits."""
    lo, hi = 0, limit
    while lo < hi:  # the largest response r with fits(max(budget, prompt + r))
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(max(budget, prompt_tokens + mid)) else (lo, mid - 1)
    return lo


def engine_gib(shape: ModelShape, tp: int, memory_gib: float, utilization: float, fp8: bool) -> dict[str, float]:
    """One engine's share of each of its `tp` GPUs: the weights (bf16, or fp8), its runtime, and the KV cache vLLM
    takes from what `utilization` of the GPU leaves."""
    weights = shape.params * (1 if fp8 else 2) / tp / GIB
    kv = utilization * memory_gib - weights - ENGINE_RUNTIME_GIB
    return {"weights": weights, "runtime": ENGINE_RUNTIME_GIB, "KV cache": kv}


def kv_tokens(shape: ModelShape, tp: int, kv_gib: float) -> int:
    """Tokens the KV cache holds: each GPU keeps 1/tp of every token's K and V."""
    return int(kv_gib * GIB * tp / shape.kv_bytes_per_token) if kv_gib > 0 else 0


def fit(gpus: list[GPU], memory_gib: float) -> None:
    """PlanError naming the first GPU whose peak passes its memory, or an engine left no KV cache."""
    for g in gpus:
        kv = [v for k, v in g.parts.items() if k.endswith("KV cache")]
        if any(v <= 0 for v in kv):
            raise PlanError(f"{g.name()}: the engine's weights and runtime take more than its share of the GPU "
                            f"({', '.join(f'{k} {v:.1f} GiB' for k, v in g.parts.items())}); raise "
                            f"rollout.gpu_memory_utilization or rollout.tensor_parallel_size")
        if g.peak_gib > memory_gib:
            raise PlanError(f"{g.name()} needs {g.peak_gib:.1f} GiB of {memory_gib:g} GiB: "
                            f"{', '.join(f'{k} {v:.1f}' for k, v in g.parts.items())} ({g.note}); shard the trainer "
                            f"over more ranks (trainer.sharding=fsdp, trainer.ranks), turn on "
                            f"trainer.activation_checkpointing, or lower trainer.max_tokens_per_micro_batch "
                            f"(trainer.micro_batch_size)")


def peak(parts: dict[str, float], trainer_keys: list[str], engine_keys: list[str], sleeps: bool) -> tuple[float, str]:
    """A GPU's peak: trainer and engine together, or, when the engine sleeps while the trainer works (colocated
    with vLLM's sleep mode), the larger of the two phases. Each process adds its CUDA context."""
    trainer = sum(parts[k] for k in trainer_keys)
    engine = sum(parts[k] for k in engine_keys)
    contexts = CUDA_CONTEXT_GIB * (bool(trainer_keys) + bool(engine_keys))
    if sleeps and trainer_keys and engine_keys:
        return max(trainer, engine) + contexts, "engine asleep while the trainer works"
    return trainer + engine + contexts, "trainer and engine at once" if trainer_keys and engine_keys else ""


def summary_lines(gpus: list[GPU], memory_gib: float) -> list[str]:
    out = []
    for g in gpus:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in g.parts.items()) or "idle"
        out.append(f"  {g.name():<14} {g.peak_gib:6.1f} / {memory_gib:g} GiB  {parts}" + (f"  [{g.note}]" if g.note else ""))
    return out


@dataclass(frozen=True)
class Layout:
    """Which GPUs each engine and trainer rank holds: (node, GPU index) lists."""

    engines: list[list[tuple[int, int]]]
    ranks: list[tuple[int, int]]


def place(cluster: Cluster, engines: int, tp: int, ranks: int, colocate: bool) -> Layout:
    """Engines take `tp` GPUs of one node each, filling nodes in order; trainer ranks one GPU each, on the GPUs
    left (split), or on the engines' GPUs, rank i beside the i-th engine GPU (colocated)."""
    free = [(n, i) for n in range(cluster.nodes) for i in range(cluster.gpus_per_node)]
    need = engines * tp + (0 if colocate else ranks)
    if need > cluster.gpus or (colocate and ranks > engines * tp):
        raise PlanError(f"placement needs {max(need, ranks)} GPUs ({engines} engine(s) x tensor_parallel_size {tp}"
                        f"{'' if colocate else f' + {ranks} trainer rank(s)'}), the cluster has {cluster.gpus}")
    placed = []
    for _ in range(engines):
        node = next((n for n in range(cluster.nodes) if sum(g[0] == n for g in free) >= tp), None)
        if node is None:
            raise PlanError(f"no node has {tp} free GPUs for an engine with tensor_parallel_size {tp} "
                            f"({cluster.gpus_per_node} GPUs per node)")
        mine = [g for g in free if g[0] == node][:tp]
        placed.append(mine)
        free = [g for g in free if g not in mine]
    ranks_at = [g for e in placed for g in e][:ranks] if colocate else free[:ranks]
    return Layout(placed, ranks_at)
