"""Plain functions around one vLLM engine: start it, sample groups, score given tokens."""

from __future__ import annotations

import os
from typing import Any

from rollout.types import Completion, RolloutGroup, Sampling


def create_engine(model_path: str, *, dtype: str, seed: int, enforce_eager: bool, kv_cache_gib: int,
                  gpu_memory_utilization: float, max_model_len: int, threads: int):
    """A vLLM engine running in this process, so `collective_rpc` can reach its worker directly. `threads` > 0:
    the CPU threads it computes with (this process's torch/OpenMP pool, sized here)."""
    import torch

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if threads > 0:
        # The engine computes on this process's OpenMP pool, which OpenMP sized from OMP_NUM_THREADS when torch
        # loaded: a Ray actor holding 1 CPU starts with OMP_NUM_THREADS=1, so setting the variable now is too late
        # and vLLM's CPU worker blocks `torch.set_num_threads` once it starts. Size the pool before it does.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    from vllm import LLM

    return LLM(
        model=model_path,
        dtype=dtype,
        seed=seed,
        enforce_eager=enforce_eager,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        enable_prefix_caching=False,  # reused KV from before a weight update would be stale
    )


def sampling_params(s: Sampling):
    from vllm import SamplingParams

    return SamplingParams(
        n=s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_new_tokens,
        stop=list(s.stop),
        include_stop_str_in_output=True,  # the format reward must see the closing tag
        logprobs=0,  # the sampled token's own logprob
        seed=s.seed,
    )


def generate_groups(llm, prompt_ids: list[list[int]], prompt_indices: list[int], params: Any,
                    capture_routing: bool = False) -> list[RolloutGroup]:
    """One RolloutGroup per prompt, with `params.n` completions each; with `capture_routing` (the engine has
    `rollout.routing.install_capture`), each completion also carries the experts its tokens were routed to."""
    from vllm.inputs import TokensPrompt

    from rollout.routing import parse_request_id, take_routing

    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
    routing = {}
    if capture_routing:
        routing = {parse_request_id(k): v for k, v in llm.collective_rpc(take_routing)[0].items()}
    groups = []
    for idx, ids, out in zip(prompt_indices, prompt_ids, outputs):
        group = RolloutGroup(prompt_index=idx, prompt_ids=list(ids))
        for c in out.outputs:
            lps = [step[tok].logprob for step, tok in zip(c.logprobs, c.token_ids)]
            experts = routing.get((out.request_id, c.index))
            if experts is not None and experts.shape[0] != len(ids) + len(c.token_ids) - 1:
                experts = None  # e.g. a preempted and recomputed request: its rows do not line up
            group.completions.append(Completion(list(c.token_ids), c.text, lps, c.finish_reason or "length", experts))
        groups.append(group)
    return groups
