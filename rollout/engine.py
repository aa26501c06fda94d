"""Plain functions around one vLLM engine: start it, sample groups, score given tokens."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from rollout.types import Completion, EngineSpec, RolloutGroup, Sampling, stable_seed


def create_engine(spec: EngineSpec):
    """A vLLM engine running in this process, with purerl's worker extension and its weights synced through
    vLLM's RL lifecycle by `spec.weight_transfer`. `spec.threads` > 0: the CPU threads it computes with (this
    process's torch/OpenMP pool, sized here)."""
    import torch

    from rollout.vllm_ext import EXTENSION, register

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if spec.threads > 0:
        # The engine computes on this process's OpenMP pool, which OpenMP sized from OMP_NUM_THREADS when torch
        # loaded: a Ray actor holding 1 CPU starts with OMP_NUM_THREADS=1, so setting the variable now is too late
        # and vLLM's CPU worker blocks `torch.set_num_threads` once it starts. Size the pool before it does.
        os.environ["OMP_NUM_THREADS"] = str(spec.threads)
        torch.set_num_threads(spec.threads)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.kv_cache_gib))
    from vllm import LLM

    register()  # the `purerl` backend, before the engine looks its backend up
    gpu_only = {}  # on CPU, vLLM refuses sleep mode and has no Model Runner V2
    gpu_only.update(cpu_mla_settings(spec))
    gpu_only.update(cpu_seed_settings(spec))
    if spec.sleep_mode:
        gpu_only["enable_sleep_mode"] = True
    if spec.native_routing:
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "1")
        gpu_only["enable_return_routed_experts"] = True
    if spec.lora_rank:
        gpu_only |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank_slot(spec.lora_rank)}
    return LLM(
        model=spec.model_path,
        dtype=spec.dtype,
        seed=spec.seed,
        enforce_eager=spec.enforce_eager,
        max_model_len=spec.max_model_len,
        gpu_memory_utilization=spec.gpu_memory_utilization,
        tensor_parallel_size=spec.tensor_parallel_size,
        quantization=spec.quantization,
        # reused KV from before a weight update would be stale; vLLM's routed-experts capture needs it on, and
        # the actor resets it after every sync
        enable_prefix_caching=spec.native_routing,
        weight_transfer_config={"backend": spec.weight_transfer},
        worker_extension_cls=EXTENSION,
        **gpu_only,
    )


def cpu_seed_settings(spec: EngineSpec) -> dict:
    """On CPU, whole prefills: after a chunk of a prefill vLLM rewinds the request's generator, which a seeded
    request's CPU generator cannot do ("CPU Generator does not use offset"; rollout.request_seeds)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(spec.max_model_len, 2048)}


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's allowed max_lora_rank values


def lora_rank_slot(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of `rank`."""
    fits = [r for r in LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(f"model.lora.rank={rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")
    return fits[0]


def write_adapter(folder: Path, tensors: list, config: dict) -> Path:
    """An adapter in peft's format (adapter_config.json, adapter_model.safetensors), which vLLM's LoRA loads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def cpu_mla_settings(spec: EngineSpec) -> dict:
    """Engine settings that a multi-head latent attention model (DeepSeek-V2/V3) needs on vLLM-CPU 0.32.

    - vLLM's CPU `rotary_embedding` op rotates a 3-D (tokens, heads, dim) tensor wrongly when it has more than
      one head (a 2-D tensor is right), and DeepSeek's attention passes its query's rope part that way: the
      logprobs then differ from transformers' by ~0.01 in fp32 on a tiny random model, by ~10 with weights ten
      times larger. `-rotary_embedding` makes vLLM use its own PyTorch rope instead (docs/deepseek.md).
    - The AMX MLA backend, vLLM's pick where the CPU has AMX, takes bf16 weights only: fp32 runs on CPU_MLA.
    Settings of the engine, not a patch of vLLM; tests/test_deepseek.py says when vLLM's op no longer needs it.
    """
    import torch

    if torch.cuda.is_available():
        return {}
    try:
        config = json.loads((Path(spec.model_path) / "config.json").read_text())
    except (OSError, ValueError):  # a hub id: vLLM reads it; hub DeepSeek files are not run on CPU here
        return {}
    if not config.get("kv_lora_rank"):
        return {}
    out = {"compilation_config": {"custom_ops": ["-rotary_embedding"]}}
    if spec.dtype == "float32":
        out["attention_config"] = {"backend": "CPU_MLA"}
    return out


def sampling_params(s: Sampling):
    from vllm import SamplingParams

    return SamplingParams(
        n=s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_new_tokens,
        min_tokens=s.min_new_tokens,  # also holds back the stop strings (vLLM checks them only past min_tokens)
        stop=list(s.stop),
        include_stop_str_in_output=True,  # the format reward must see the closing tag
        logprobs=0,  # the sampled token's own logprob
        seed=s.seed,
    )


def seeded(params, seed: int):
    """A copy of vLLM SamplingParams with its own seed (vLLM seeds the n samples of a request seed, seed + 1, ...)."""
    out = params.clone()
    out.seed = seed
    return out


def generate_groups(llm, prompt_ids: list[list[int]], prompt_indices: list[int], params: Any,
                    capture_routing: bool = False, lora_request=None) -> list[RolloutGroup]:
    """One RolloutGroup per prompt, with `params.n` completions each, tagged with the weight version the engine
    held; with `capture_routing` (installed by `install_capture`), each completion also carries the experts its
    tokens were routed to; with `lora_request`, sampled with that adapter."""
    from vllm.inputs import TokensPrompt

    version = weight_version(llm)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False,
                           lora_request=lora_request)
    routing = llm.collective_rpc("purerl_take_routing")[0] if capture_routing else {}
    groups = []
    for idx, ids, out in zip(prompt_indices, prompt_ids, outputs):
        group = RolloutGroup(prompt_index=idx, prompt_ids=list(ids), weight_version=version)
        for c in out.outputs:
            lps = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)]
            fed = len(ids) + len(c.token_ids) - 1
            experts = routing.get((out.request_id, c.index)) if routing else native_routing(c, fed)
            if experts is not None and experts.shape[0] != fed:
                experts = None  # e.g. a preempted and recomputed request: its rows do not line up
            group.completions.append(Completion(list(c.token_ids), c.text, lps, c.finish_reason or "length", experts))
        groups.append(group)
    return groups


def generate_tool_groups(llm, prompt_ids: list[list[int]], prompt_indices: list[int], s: Sampling, offset: int,
                         max_model_len: int, capture_routing: bool = False) -> list[RolloutGroup]:
    """Groups whose answers may call a tool mid-answer (s.tools; rollout/tools/turns.py): each of a prompt's n
    answers is a trajectory of its own, generated turn by turn. Seeded, an answer's first turn draws what the
    same answer draws without tools (vLLM seeds a request's n samples seed, seed + 1, ...), so the two agree until
    the first call. The engine's idle time while calls ran is shared evenly among the groups (engine_idle_s). With
    `capture_routing`, an answer's experts come from its last turn's request, whose prefill ran every earlier token
    (its prompt, its sampled and its tool tokens) through the routers."""
    from rollout.tools.turns import Budget, run_turns, settings_of

    version = weight_version(llm)
    seeds = [None if s.seed is None else stable_seed(s.seed, offset + i) + j
             for i in range(len(prompt_ids)) for j in range(s.n)]
    tokenizer, engine = llm.get_tokenizer(), EngineTurns(llm, s, seeds, version)
    rollout = run_turns([list(p) for p in prompt_ids for _ in range(s.n)], engine, tokenizer, settings_of(s.tools),
                        Budget(max_model_len, s.max_new_tokens))
    routes = engine.routes(rollout.trajectories) if capture_routing else [None] * len(rollout.trajectories)
    idle = rollout.engine_idle_s / max(len(prompt_ids), 1)
    groups, version = [], weight_version(llm)
    for i, (idx, ids) in enumerate(zip(prompt_indices, prompt_ids)):
        group = RolloutGroup(prompt_index=idx, prompt_ids=list(ids), weight_version=version, engine_idle_s=idle)
        for t, experts in zip(rollout.trajectories[i * s.n: (i + 1) * s.n], routes[i * s.n: (i + 1) * s.n]):
            group.completions.append(Completion(t.ids, tokenizer.decode(t.ids), t.logprobs, t.finish_reason, experts,
                                                tool_mask=t.mask, tool_calls=tuple(c.status for c in t.calls),
                                                tool_seconds=tuple(c.wall_s for c in t.calls), void_turn=t.void_turn))
        groups.append(group)
    return groups


class EngineTurns:
    """The engine's part of the tool loop (rollout/tools/turns.py Engine): each trajectory's turn is a request of
    its own, with its own stop strings and token budget, seeded from the trajectory's seed and its turn; requests
    are added while others decode (the LLMEngine's add_request and step, which LLM.generate runs to the end)."""

    def __init__(self, llm, s: Sampling, seeds: list[int | None], version: int):
        self.llm, self.s, self.seeds, self.version = llm, s, seeds, version
        self.base = sampling_params(dataclasses.replace(s, n=1, tools=None))
        self.turns = [0] * len(seeds)
        self.keys: dict[str, int] = {}  # request id -> trajectory key
        self.last: dict[int, str] = {}  # trajectory key -> its last request's id

    def submit(self, key: int, request: list[int], stop: list[str], budget: int) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        seed = self.seeds[key]
        q = seeded(self.base, seed + 7919 * self.turns[key]) if seed is not None else self.base.clone()
        q.stop, q.max_tokens = list(self.s.stop) + stop, budget
        q.min_tokens = min(q.min_tokens, budget) if self.turns[key] == 0 else 0
        q.output_kind = RequestOutputKind.FINAL_ONLY
        rid = f"purerl-turn-{id(self)}-{key}-{self.turns[key]}"
        self.turns[key] += 1
        self.llm.llm_engine.add_request(rid, TokensPrompt(prompt_token_ids=request), q)
        self.keys[rid], self.last[key] = key, rid

    @property
    def busy(self) -> bool:
        return self.llm.llm_engine.has_unfinished_requests()

    def step(self) -> list:
        from rollout.tools.turns import Turn

        return [(self.keys.pop(o.request_id), _turn(o.outputs[0], Turn), self.version)
                for o in self.llm.llm_engine.step() if o.finished]

    def routes(self, trajectories: list) -> list:
        """Each trajectory's experts for its fed tokens (all but the last), from its last request's capture (the
        hooks installed by `install_capture`); None where they do not cover them all: an answer that ended in a
        tool's output, which no request fed."""
        routing = self.llm.collective_rpc("purerl_take_routing")[0]
        found = [routing.get((self.last[t.key], 0)) for t in trajectories]
        return [e if e is not None and e.shape[0] == len(t.full) - 1 else None for t, e in zip(trajectories, found)]


def _turn(c, turn_type):
    lps = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)]
    stop = c.stop_reason if isinstance(c.stop_reason, str) else None
    return turn_type(list(c.token_ids), lps, c.finish_reason or "length", stop)


def native_routing(completion, fed: int):
    """vLLM's own record of the experts (Model Runner V2, `enable_return_routed_experts`), as the hooks file it:
    the `fed` tokens' rows (layers, k) int16; None where the engine returns none. Not run on a GPU yet."""
    import torch

    found = getattr(completion, "routed_experts", None)
    return None if found is None else torch.as_tensor(found[:fed]).to(torch.int16)


def install_capture(llm, top_k: int) -> int:
    """Hooks the engine's MoE routers to record the top-k experts of every fed token; returns the number of
    layers hooked (0: the model has no router, nothing installed)."""
    return llm.collective_rpc("purerl_install_capture", args=(top_k,))[0]


def weight_version(llm) -> int:
    """The weight version the engine holds (the trainer step its weights come from; 0 before the first sync)."""
    held = llm.get_weight_version()
    return int(held) if held.lstrip("-").isdigit() else 0  # vLLM's initial label is "default"
