"""A pool of rollout actors: splits prompts over engines, gathers groups in order, broadcasts weights."""

from __future__ import annotations

import ray
import torch

from rollout.types import RolloutGroup
from rollout.weight_sync import pack_tensors
from rollout.worker import RolloutWorker


class RolloutPool:
    def __init__(self, model_path: str, *, num_engines: int, engine_cpus: float, engine_kwargs: dict,
                 capture_routing_top_k: int = 0):
        self.workers = [
            RolloutWorker.options(num_cpus=engine_cpus).remote(model_path, engine_kwargs, rank, capture_routing_top_k)
            for rank in range(num_engines)
        ]
        ray.get([w.node_id.remote() for w in self.workers])  # engines are up (or the error surfaces here)

    def generate(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: dict) -> list[RolloutGroup]:
        """One group per prompt, in the order given; prompts are dealt to engines in contiguous shards."""
        k = len(self.workers)
        bounds = [round(i * len(prompt_ids) / k) for i in range(k + 1)]
        futures = [
            w.generate.remote(prompt_ids[a:b], prompt_indices[a:b], sampling)
            for w, a, b in zip(self.workers, bounds[:-1], bounds[1:])
            if b > a
        ]
        return [g for shard in ray.get(futures) for g in shard]

    def update_weights(self, items: list[tuple[str, torch.Tensor]]) -> float:
        """Puts the weights in the object store once, packed into one buffer per dtype; every engine loads
        them in place. Returns the longest time an engine spent loading."""
        ref = ray.put(pack_tensors(items))
        return max(ray.get([w.update_weights.remote(ref) for w in self.workers]))

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
