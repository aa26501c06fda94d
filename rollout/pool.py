"""A pool of rollout actors: splits prompts over engines, gathers groups in order, syncs weights into them,
and replaces an engine that dies.

The pool is the client of vLLM's weight-transfer lifecycle (`VLLMWeightSyncClient`: init, start, update,
finish): a trainer engine (rollout/transfer.py, or vLLM's own for `nccl`/`ipc`) drives it, and it fans each
call out to its live engines. For the `purerl` backend it also routes the weights: engines on this node read
them from /dev/shm, the others from one object in Ray's object store. After every sync each engine reports the
version it holds, and a mismatch is an error.

Every call has a deadline (`call_timeout_s`): an engine that misses it is killed and handled as a dead one. An
engine that dies mid-call is started again in its placement bundle from the last weights the pool sent (at
their version), and its unfinished shard is sent again; groups come back in prompt order, so a step sees every
prompt exactly once. If no engine can be started within `restart_timeout_s` (its node is gone and nothing else
can hold it), the shard goes to the surviving engines; when none survive, `EngineLost` says so.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import ray

from rollout.shared_memory import SharedWeights
from rollout.transport import PackedWeights, pack_tensors
from rollout.types import EngineSpec, RolloutGroup, Sampling
from rollout.worker import RolloutWorker

logger = logging.getLogger(__name__)


class EngineLost(RuntimeError):
    """Every rollout engine died and none could be started again."""


class EngineHung(RuntimeError):
    """An engine did not answer a call within rollout.call_timeout_s; it was killed, and is replaced as a dead one."""


class WeightVersionError(RuntimeError):
    """An engine holds other weights than the trainer synced: the stale-weights guard."""


@dataclass
class Pending:
    """A generation call in flight (rollout.async): collect it with `RolloutPool.wait`."""

    shards: list[tuple[int, list[list[int]], list[int], int]]  # (engine slot, prompt ids, prompt indices, offset)
    futures: list[ray.ObjectRef]
    sampling: Sampling
    started: float  # time.monotonic() at submission: the deadline of its calls counts from here


class RolloutPool:
    def __init__(self, spec: EngineSpec, *, actor_options: list[dict], shared_memory: bool,
                 capture_routing_top_k: int = 0, max_restarts: int = 3, restart_timeout_s: float = 120.0,
                 version: int = 0, call_timeout_s: float = 1800.0, base_path: str | None = None):
        """`actor_options`: Ray options per engine (resources and placement bundle, rl.run.placement).
        `shared_memory`: `purerl`-backend engines on this node get the weights through /dev/shm.
        `version`: the weight version the engines start at (the step of the checkpoint in `spec.model_path`).
        `call_timeout_s`: an engine that has not answered a call (a generation, a sync) by then is taken for hung:
        killed, and replaced as a dead one. `base_path`: the model an engine restarted after a sync starts from
        before it loads the last weights sent (the checkpoint in `spec.model_path` that a resumed run started from
        may be deleted by then: run.keep_last); default `spec.model_path`."""
        self.spec, self.capture_routing_top_k = spec, capture_routing_top_k
        self.options = list(actor_options)
        self.max_restarts, self.restart_timeout_s, self.call_timeout_s = max_restarts, restart_timeout_s, call_timeout_s
        self.base_path = base_path
        self.restarts = 0
        self.hangs = 0  # engines killed for missing rollout.call_timeout_s
        self.deaths: list[tuple[str, int]] = []  # (the call that found it dead, engine slot)
        self.version = version  # the weight version every live engine holds
        self.next_version: int | None = None  # what the sync in progress labels the weights (default version + 1)
        self.weights: PackedWeights | ray.ObjectRef | None = None  # the last weights sent: a restarted engine loads them
        self.adapter: tuple[ray.ObjectRef, dict] | None = None  # the last adapter sent (rollout.lora_sync=adapter)
        self.init_info: dict | None = None  # the transfer engine's init info, for restarted engines too
        self.shared = SharedWeights() if shared_memory else None
        self.node = ray.get_runtime_context().get_node_id()
        self.workers: list = [self._start(rank) for rank in range(len(self.options))]
        self.node_ids = ray.get([w.node_id.remote() for w in self.workers])  # engines are up (or the error surfaces)
        self.load_s = 0.0  # the slowest engine's load in the last sync
        self._lost: list[tuple[int, Exception, str]] = []  # engines found dead during the sync in progress
        self._starting = False  # a sync is open and its engines' start_weight_update has not run yet
        self.sleeps = 0  # times the colocated engines slept for the trainer

    def _start(self, rank: int):
        spec = self.spec
        if self.weights is not None and self.base_path:  # it loads every weight anyway: start from what stays
            spec = dataclasses.replace(spec, model_path=self.base_path)
        return RolloutWorker.options(**self.options[rank]).remote(spec, rank, self.capture_routing_top_k, self.version)

    def live(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if w is not None]

    def submit(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling) -> Pending:
        """Deals prompts to the live engines in contiguous shards and starts generating; returns at once."""
        slots = self.live()
        if not slots:
            raise EngineLost("no rollout engine is alive")
        k = len(slots)
        bounds = [round(i * len(prompt_ids) / k) for i in range(k + 1)]
        shards = [(slot, prompt_ids[a:b], prompt_indices[a:b], a) for slot, a, b in zip(slots, bounds[:-1], bounds[1:])
                  if b > a]
        futures = [self.workers[slot].generate.remote(ids, idx, sampling, offset) for slot, ids, idx, offset in shards]
        return Pending(shards, futures, sampling, time.monotonic())

    def wait(self, pending: Pending) -> list[RolloutGroup]:
        """The groups of a submitted call, in prompt order; a shard whose engine died is generated again."""
        out = []
        for (slot, ids, idx, offset), future in zip(pending.shards, pending.futures):
            deadline = pending.started + self.call_timeout_s
            while True:
                try:
                    out += self._get(slot, future, "generate", deadline)
                    break
                except (ray.exceptions.RayActorError, EngineHung) as e:
                    slot = self._replace(slot, e, "generate")
                    future = self.workers[slot].generate.remote(ids, idx, pending.sampling, offset)
                    deadline = time.monotonic() + self.call_timeout_s
        return out

    def _get(self, slot: int, future: ray.ObjectRef, call: str, deadline: float):
        """The answer of engine `slot` to `call` by `deadline` (time.monotonic()); past it the engine is killed and
        EngineHung names it, its node and the call."""
        ready, _ = ray.wait([future], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            self.hangs += 1
            ray.kill(self.workers[slot])
            raise EngineHung(f"rollout engine {slot} (node {self.node_ids[slot]}) did not answer {call} within "
                             f"rollout.call_timeout_s={self.call_timeout_s:g} s")
        return ray.get(future)

    def generate(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling) -> list[RolloutGroup]:
        """One group per prompt, in the order given."""
        return self.wait(self.submit(prompt_ids, prompt_indices, sampling))

    def sleep(self, level: int = 1) -> None:
        """Colocated engines free their GPU memory for the trainer (vLLM's sleep mode)."""
        self._each("sleep", {s: (level,) for s in self.live()})
        self.sleeps += 1
        self._settle_losses()

    def wake_up(self, tags: list[str]) -> None:
        """`["weights"]` before a sync (the weights must be in place to be loaded), `["kv_cache"]` after it."""
        self._each("wake_up", {s: (tags,) for s in self.live()})
        self._settle_losses()

    # ---- vLLM's weight-sync client (VLLMWeightSyncClient): each call fans out to the live engines

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        """Once per run. A `rank_offset` (NCCL) is made each engine's own, so their ranks never collide."""
        self.init_info = dict(init_info)
        self._each("init_weight_transfer_engine", {s: self._init_for(s) for s in self.live()})
        self._settle_losses()

    def start_weight_update(self) -> None:
        """Opens the sync. Each engine's `start_weight_update` runs in the same actor call as its first chunk
        (one Ray round trip less per sync; the engine still sees start -> update -> finish)."""
        self._lost, self._starting = [], True

    def update_weights(self, update_info: dict) -> None:
        """One chunk. For `purerl`, `{"items": [(name, tensor)]}` or `{"packed": ObjectRef of PackedWeights}`
        (a trainer rank packed them): each engine gets it through /dev/shm or the object store."""
        chunks = (self._payloads(update_info) if self.spec.weight_transfer == "purerl"
                  else {s: (update_info, None) for s in self.live()})
        self._each("update_weights", {s: (*a, self._starting) for s, a in chunks.items()})
        self._starting = False

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        """Ends the sync at `weight_version` (default: `next_version`, else the version after the current);
        every engine must then report it. Trainer engines of vLLM's own finish without a version."""
        version = int(weight_version) if weight_version is not None else (
            self.next_version if self.next_version is not None else self.version + 1)
        self.next_version = None
        if self._starting:  # a sync without a chunk
            self._each("start_weight_update", {s: () for s in self.live()})
            self._starting = False
        done = self._each("finish_weight_update", {s: (version,) for s in self.live()})
        self.version = version
        self._settle_losses()  # restarted engines load the new weights at the new version
        wrong = {s: held for s, (held, _) in done.items() if held != version}
        if wrong:
            raise WeightVersionError(f"after the sync to weight version {version}, engine(s) report "
                                     f"{', '.join(f'{s}: {v}' for s, v in wrong.items())}")
        self.load_s = max((s for _, s in done.values()), default=0.0)

    def load_adapter(self, tensors: list | ray.ObjectRef, config: dict) -> None:
        """The adapter sync (rollout.lora_sync=adapter): the adapter's tensors (or an ObjectRef of them packed)
        and its peft config to every live engine, which loads it in place as weight version `next_version`;
        every engine must then report that version."""
        version = self.next_version if self.next_version is not None else self.version + 1
        self.next_version = None
        ref = tensors if isinstance(tensors, ray.ObjectRef) else ray.put(pack_tensors(tensors))
        self._lost = []
        done = self._each("load_adapter", {s: (ref, config, version) for s in self.live()})
        self.adapter, self.version = (ref, config), version
        self._settle_losses()
        wrong = {s: held for s, (held, _) in done.items() if held != version}
        if wrong:
            raise WeightVersionError(f"after the adapter sync to weight version {version}, engine(s) report "
                                     f"{', '.join(f'{s}: {v}' for s, v in wrong.items())}")
        self.load_s = max((s for _, s in done.values()), default=0.0)

    def _init_for(self, slot: int) -> tuple:
        info = dict(self.init_info or {})
        if "rank_offset" in info:  # NCCL: engine i's workers take the ranks after engine i-1's
            info["rank_offset"] += slot * int(info.get("ranks_per_engine", 1))
        info.pop("ranks_per_engine", None)
        return (info,)

    def _payloads(self, update_info: dict) -> dict[int, tuple]:
        """Per live engine, the `purerl` update info and the packed weights as a top-level argument (Ray resolves
        an ObjectRef only there): a /dev/shm handle for engines on this node, one object-store copy otherwise."""
        live = self.live()
        weights = update_info["items"] if "items" in update_info else update_info["packed"]
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
        return {s: ({"shared": handle}, None) if s in local else ({}, ref) for s in live}

    def _each(self, method: str, args: dict[int, tuple]) -> dict:
        """Calls `method` on every engine in `args` at once; an engine found dead is noted (replaced once the
        sync is over) and left out of the result."""
        futures = {s: getattr(self.workers[s], method).remote(*a) for s, a in args.items()}
        out, deadline = {}, time.monotonic() + self.call_timeout_s
        for slot, future in futures.items():
            try:
                out[slot] = self._get(slot, future, method, deadline)
            except (ray.exceptions.RayActorError, EngineHung) as e:
                self.workers[slot] = None
                self._lost.append((slot, e, method))
        return out

    def _settle_losses(self) -> None:
        """Engines lost during a sync are replaced now (a restarted one loads the last weights at their
        version); if none is left, the next generation call reports it, before any training on missing data."""
        lost, self._lost = self._lost, []
        for slot, error, during in lost:
            try:
                self._replace(slot, error, during)
            except EngineLost:
                return

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

    # ---- replacing an engine that died

    def _replace(self, slot: int, error: Exception, during: str) -> int:
        """Starts engine `slot` again with the last weights and returns it; if that fails, drops it and returns a
        surviving engine's slot. Raises EngineLost when none is left."""
        if isinstance(error, EngineHung):
            logger.warning("%s; starting it again", error)
        else:
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
        """A new engine in slot's bundle holding the last weights at their version, or None after
        restart_timeout_s. A node that just died may not be marked dead yet, so an engine placed there dies
        too; then it is tried again."""
        deadline = time.monotonic() + self.restart_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            worker = self._start(slot)
            try:
                self.node_ids[slot] = ray.get(worker.node_id.remote(), timeout=left)
                self._catch_up(worker, max(deadline - time.monotonic(), 1))
                return worker
            except ray.exceptions.GetTimeoutError:
                ray.kill(worker)
                return None
            except ray.exceptions.RayActorError as e:
                ray.kill(worker)
                logger.warning("restarted rollout engine %d died too (%s); trying again", slot, type(e).__name__)
                time.sleep(1.0)
        return None

    def _catch_up(self, worker, timeout: float) -> None:
        """A new engine joins the weight transfer and loads the last weights the pool sent, at their version."""
        if self.init_info is not None:
            ray.get(worker.init_weight_transfer_engine.remote(self.init_info), timeout=timeout)
        if self.adapter is not None:
            ray.get(worker.load_adapter.remote(*self.adapter, self.version), timeout=timeout)
        if self.weights is None:
            return
        if self.spec.weight_transfer != "purerl":
            raise EngineLost(f"a restarted engine cannot fetch the weights over {self.spec.weight_transfer!r} by "
                             f"itself; the run stops with a checkpoint (continue with RESUME=1)")
        ray.get(worker.update_weights.remote({}, self.weights, True), timeout=timeout)
        ray.get(worker.finish_weight_update.remote(self.version), timeout=timeout)

    def shutdown(self) -> None:
        self.weights = None
        if self.shared is not None:
            self.shared.close()
        live = [w for w in self.workers if w is not None]
        if self.spec.lora_rank:  # their adapter folders (tmpfs) go with them
            ray.wait([w.close.remote() for w in live], num_returns=len(live), timeout=10)
        for w in live:
            ray.kill(w)
        self.workers = []
