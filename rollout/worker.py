"""The Ray actor that holds one vLLM engine. Thin: it owns the engine and calls plain functions."""

from __future__ import annotations

import logging
import os
import time

import ray

from rollout.engine import create_engine, generate_groups, sampling_params
from rollout.routing import install_capture
from rollout.shared_memory import SharedHandle, open_shared, release_shared
from rollout.types import RolloutGroup, Sampling
from rollout.weight_sync import PackedWeights, push_weights, unpack_tensors

logger = logging.getLogger(__name__)


@ray.remote
class RolloutWorker:
    def __init__(self, model_path: str, engine_kwargs: dict, rank: int, capture_routing_top_k: int = 0):
        self.rank = rank
        self.llm = create_engine(model_path, **engine_kwargs)
        self.capture = capture_routing_top_k > 0
        if self.capture and self.llm.collective_rpc(install_capture, args=(capture_routing_top_k,))[0] == 0:
            logger.warning("rollout.capture_routing: no router modules found in the engine's model; capture is off")
            self.capture = False

    def generate(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling) -> list[RolloutGroup]:
        groups = generate_groups(self.llm, prompt_ids, prompt_indices, sampling_params(sampling), self.capture)
        for g in groups:
            g.engine = self.rank
        return groups

    def update_weights(self, items: PackedWeights | SharedHandle | list) -> float:
        """Loads the weights in place; returns the seconds spent inside the engine (reading shared memory
        included)."""
        t = time.perf_counter()
        if isinstance(items, SharedHandle):
            items = open_shared(items)
        else:
            release_shared()
        push_weights(self.llm, unpack_tensors(items) if isinstance(items, PackedWeights) else items)
        return time.perf_counter() - t

    def run(self, fn, *args):
        """`fn(vllm_worker, *args)` inside the engine, for tests and diagnostics."""
        return self.llm.collective_rpc(fn, args=args)[0]

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()
