"""A pool of rollout actors: splits prompts over engines, gathers groups in order, broadcasts weights, and
replaces an engine that dies.

An engine that dies mid-call is started again in its placement bundle from the last weights the pool sent, and
its unfinished shard is sent again; groups come back in prompt order, so a step sees every prompt exactly once.
If no engine can be started within `restart_timeout_s` (its node is gone and nothing else can hold it), the
shard goes to the surviving engines; when none survive, `EngineLost` says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray
import torch

from rollout.shared_memory import SharedWeights
from rollout.types import RolloutGroup, Sampling
from rollout.weight_sync import PackedWeights, pack_tensors
from rollout.worker import RolloutWorker

logger = logging.getLogger(__name__)


class EngineLost(RuntimeError):
    """Every rollout engine died and none could be started again."""


@dataclass
class Pending:
    """A generation call in flight (rollout.async): collect it with `RolloutPool.wait`."""

    shards: list[tuple[int, list[list[int]], list[int]]]  # (engine slot, prompt ids, prompt indices)
    futures: list[ray.ObjectRef]
    sampling: Sampling


class RolloutPool:
    def __init__(self, model_path: str, *, engine_kwargs: dict, actor_options: list[dict],
                 shared_memory: bool, capture_routing_top_k: int = 0, max_restarts: int = 3,
                 restart_timeout_s: float = 120.0):
        """`actor_options`: Ray options per engine (resources and placement bundle, rl.placement).
        `shared_memory`: engines on this node get the weights through /dev/shm (rollout.shared_memory)."""
        self.args = (model_path, engine_kwargs)
        self.capture_routing_top_k = capture_routing_top_k
        self.options = list(actor_options)
        self.max_restarts, self.restart_timeout_s = max_restarts, restart_timeout_s
        self.restarts = 0
        self.deaths: list[tuple[str, int]] = []  # (the call that found it dead, engine slot)
        self.weights: PackedWeights | ray.ObjectRef | None = None  # the last weights sent: a restarted engine loads them
        self.shared = SharedWeights() if shared_memory else None
        self.node = ray.get_runtime_context().get_node_id()
        self.workers: list = [self._start(rank) for rank in range(len(self.options))]
        self.node_ids = ray.get([w.node_id.remote() for w in self.workers])  # engines are up (or the error surfaces)

    def _start(self, rank: int):
        return RolloutWorker.options(**self.options[rank]).remote(*self.args, rank, self.capture_routing_top_k)

    def live(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w is not None]

    def submit(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling) -> Pending:
        """Deals prompts to the live engines in contiguous shards and starts generating; returns at once."""
        slots = self.live()
        if not slots:
            raise EngineLost("no rollout engine is alive")
        k = len(slots)
        bounds = [round(i * len(prompt_ids) / k) for i in range(k + 1)]
        shards = [(slot, prompt_ids[a:b], prompt_indices[a:b]) for slot, a, b in zip(slots, bounds[:-1], bounds[1:]) if b > a]
        futures = [self.workers[slot].generate.remote(ids, idx, sampling) for slot, ids, idx in shards]
        return Pending(shards, futures, sampling)

    def wait(self, pending: Pending) -> list[RolloutGroup]:
        """The groups of a submitted call, in prompt order; a shard whose engine died is generated again."""
        out = []
        for (slot, ids, idx), future in zip(pending.shards, pending.futures):
            while True:
                try:
                    out += ray.get(future)
                    break
                except ray.exceptions.RayActorError as e:
                    slot = self._replace(slot, e, "generate")
                    future = self.workers[slot].generate.remote(ids, idx, pending.sampling)
        return out

    def generate(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling) -> list[RolloutGroup]:
        """One group per prompt, in the order given."""
        return self.wait(self.submit(prompt_ids, prompt_indices, sampling))

    def _replace(self, slot: int, error: Exception, during: str) -> int:
        """Starts engine `slot` again with the last weights and returns it; if that fails, drops it and returns a
        surviving engine's slot. Raises EngineLost when none is left."""
        logger.warning("rollout engine %d died during %s (%s); starting it again", slot, during, type(error).__name__)
        self.deaths.append((during, slot))
        self.workers[slot] = None
        if self.restarts < self.max_restarts:
            self.restarts += 1
            worker = self._restart(slot)
            if worker is not None:
                self.workers[slot] = worker
                return slot
            logger.warning("rollout engine %d could not be started again within %g s; using the others", slot,
                           self.restart_timeout_s)
        live = self.live()
        if not live:
            raise EngineLost(f"every rollout engine died and none could be started again "
                             f"({self.restarts} restart(s), cap rollout.max_engine_restarts={self.max_restarts})")
        return live[slot % len(live)]

    def _restart(self, slot: int):
        """A new engine in slot's bundle holding the last weights, or None after restart_timeout_s. A node that
        just died may not be marked dead yet, so an engine placed there dies too; then it is tried again."""
        deadline = time.monotonic() + self.restart_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            worker = self._start(slot)
            try:
                self.node_ids[slot] = ray.get(worker.node_id.remote(), timeout=left)
                if self.weights is not None:
                    ray.get(worker.update_weights.remote(self.weights), timeout=max(deadline - time.monotonic(), 1))
                return worker
            except ray.exceptions.GetTimeoutError:
                ray.kill(worker)
                return None
            except ray.exceptions.RayActorError as e:
                ray.kill(worker)
                logger.warning("restarted rollout engine %d died too (%s); trying again", slot, type(e).__name__)
                time.sleep(1.0)
        return None

    def update_weights(self, weights: PackedWeights | list[tuple[str, torch.Tensor]] | ray.ObjectRef) -> float:
        """Every live engine loads `weights` in place; returns the longest time an engine spent loading.

        Weights held here reach the engines on this node through /dev/shm (packed straight into the shared file)
        and the others through one `ray.put`; an ObjectRef (trainer ranks pack in their own process) goes to
        every engine as it is."""
        live = self.live()
        local = self._local(live, weights)
        handle = None
        if local and isinstance(weights, list):
            weights, handle = self.shared.pack(weights)
        elif isinstance(weights, list):
            weights = pack_tensors(weights)
        elif local:
            handle = self.shared.write(weights)
        ref = weights  # an ObjectRef as it is; weights held here are put once, if any engine is on another node
        if isinstance(weights, PackedWeights):
            ref = ray.put(weights) if len(local) < len(live) else None
        self.weights = weights
        seconds, futures = [], {s: self.workers[s].update_weights.remote(handle if s in local else ref) for s in live}
        for slot, future in futures.items():
            try:
                seconds.append(ray.get(future))
            except ray.exceptions.RayActorError as e:
                try:
                    self._replace(slot, e, "update_weights")  # a restarted engine loads self.weights as it starts
                except EngineLost:
                    pass  # the next generation call reports it, before any training on missing data
        return max(seconds, default=0.0)

    def _local(self, live: list[int], weights) -> list[int]:
        """The live engines on this node that read the weights from shared memory."""
        if self.shared is None or isinstance(weights, ray.ObjectRef):
            return []
        local = [s for s in live if self.node_ids[s] == self.node]
        if not local:
            return []
        if isinstance(weights, list):
            nbytes = sum(t.numel() * t.element_size() for _, t in weights)
        else:
            nbytes = sum(b.nbytes for b in weights.buffers.values())
        if not self.shared.reserve(nbytes):
            logger.warning("cannot allocate %.0f MB in /dev/shm for the weights; sending them through the object "
                           "store from now on", nbytes / 1e6)
            self.shared.close()
            self.shared, local = None, []
        return local

    def shutdown(self) -> None:
        self.weights = None
        if self.shared is not None:
            self.shared.close()
        for w in self.workers:
            if w is not None:
                ray.kill(w)
        self.workers = []
