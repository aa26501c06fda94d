"""The Ray actor that holds one vLLM engine. Thin: it owns the engine and calls plain functions; the weight
sync is vLLM's RL lifecycle on it (`init_weight_transfer_engine`, then start -> update -> finish per sync)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray

from rollout.engine import (
    create_engine,
    generate_groups,
    generate_tool_groups,
    install_capture,
    sampling_params,
    seeded,
    weight_version,
    write_adapter,
)
from rollout.logfile import log_to_file
from rollout.types import EngineSpec, RolloutGroup, Sampling, stable_seed

logger = logging.getLogger(__name__)
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # adapters are written where reading them is memory
_ADAPTERS = "purerl-lora-"


def _adapter_scratch() -> Path:
    """This engine's adapter folder, named by its pid; folders of engines whose process is gone are removed."""
    root = Path(_SCRATCH or tempfile.gettempdir())
    for old in root.glob(f"{_ADAPTERS}*"):
        pid = old.name.removeprefix(_ADAPTERS).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_ADAPTERS}{os.getpid()}-", dir=root))


@ray.remote
class RolloutWorker:
    def __init__(self, spec: EngineSpec, rank: int, capture_routing_top_k: int = 0, version: int = 0):
        """`version`: the weight version the engine starts at (the step of the checkpoint it loads)."""
        log_to_file(f"engine-{rank}")  # a quiet run keeps vLLM's output in the run's logs/
        self.rank, self.max_model_len = rank, spec.max_model_len
        self.llm = create_engine(spec)
        self.lora_request = None  # the adapter every generation uses (rollout.lora_sync=adapter), once one came
        self.adapter_dir = _adapter_scratch() if spec.lora_rank else None
        self.llm.update_weight_version(str(version))
        self.capture = capture_routing_top_k > 0 and not spec.native_routing  # vLLM's own capture needs no hooks
        if self.capture and install_capture(self.llm, capture_routing_top_k) == 0:
            logger.warning("rollout.capture_routing: no router modules found in the engine's model; capture is off")
            self.capture = False

    def generate(self, prompt_ids: list[list[int]], prompt_indices: list[int], sampling: Sampling,
                 offset: int = 0) -> list[RolloutGroup]:
        """`offset`: the position of the first prompt in the pool's call (its request seed, with sampling.seed)."""
        if sampling.tools is not None:
            groups = generate_tool_groups(self.llm, prompt_ids, prompt_indices, sampling, offset, self.max_model_len,
                                          self.capture)
            for g in groups:
                g.engine = self.rank
            return groups
        params = sampling_params(sampling)
        if sampling.seed is not None:
            params = [seeded(params, stable_seed(sampling.seed, offset + i)) for i in range(len(prompt_ids))]
        groups = generate_groups(self.llm, prompt_ids, prompt_indices, params, self.capture, self.lora_request)
        for g in groups:
            g.engine = self.rank
        return groups

    def sleep(self, level: int) -> None:
        """vLLM's sleep mode: level 1 moves the weights off the GPU and drops the KV cache while the colocated
        trainer works (on CPU vLLM ignores it, with a warning)."""
        self.llm.sleep(level=level)

    def wake_up(self, tags: list[str]) -> None:
        self.llm.wake_up(tags=tags)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info: dict, packed=None, start: bool = False) -> float:
        """One chunk of the sync (the backend's update info; `packed`: the `purerl` backend's PackedWeights,
        passed apart so that Ray resolves an object-store reference to it), after `start_weight_update` when
        `start` (the pool's first chunk). Returns the seconds it took."""
        t = time.perf_counter()
        if start:
            self.llm.start_weight_update()
        self.llm.update_weights({"update_info": update_info if packed is None else {**update_info, "packed": packed}})
        return time.perf_counter() - t

    def finish_weight_update(self, version: int) -> tuple[int, float]:
        """Ends the sync (the `purerl` backend loads the weights here) and labels the weights with `version`;
        returns the version the engine now reports and the seconds it took."""
        t = time.perf_counter()
        try:
            self.llm.finish_weight_update(weight_version=str(version))
        except Exception:
            self.llm.collective_rpc("purerl_abort_weight_update")  # so that the next sync can start
            raise
        if self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching:
            self.llm.reset_prefix_cache()  # computed by the old weights (purerl's engines run without one)
        return weight_version(self.llm), time.perf_counter() - t

    def load_adapter(self, packed, config: dict, version: int) -> tuple[int, float]:
        """The adapter sync (rollout.lora_sync=adapter): the adapter's tensors (`packed`, from the object store)
        written in peft's format to this engine's scratch folder (tmpfs where there is one) and loaded in place by
        vLLM's LoRA (`load_inplace`), then the weights labelled `version`; returns that version and the seconds."""
        from vllm.lora.request import LoRARequest

        from rollout.transport import unpack_tensors

        t = time.perf_counter()
        folder = write_adapter(self.adapter_dir / f"v{version}", unpack_tensors(packed), config)
        self.llm.llm_engine.add_lora(LoRARequest("policy", 1, str(folder), load_inplace=True))
        for old in self.adapter_dir.iterdir():
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        self.lora_request = LoRARequest("policy", 1, str(folder))
        self.llm.update_weight_version(str(version))
        return weight_version(self.llm), time.perf_counter() - t

    def close(self) -> None:
        """Removes this engine's adapter folder (the pool calls it before killing the actor)."""
        if self.adapter_dir is not None:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)

    def transfer_report(self) -> dict:
        """What the `purerl` backend did: lifecycle call counts, its direct plan, its last sync."""
        return self.llm.collective_rpc("purerl_transfer_report")[0]

    def run(self, fn, *args):
        """`fn(vllm_worker, *args)` inside the engine, for tests and diagnostics."""
        return self.llm.collective_rpc("purerl_call", args=(fn, *args))[0]

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()
