"""The last stage of a step: the trainer's new weights into every engine through vLLM's weight-transfer
lifecycle, driven by the backend's trainer engine (`purerl` on CPU; vLLM's `nccl` or `ipc` on GPUs)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rl.config import Config
from rl.errors import ConfigError


class AdapterSender:
    """rollout.lora_sync=adapter: each sync sends the adapter's tensors and config, which every engine loads in place
    with vLLM's LoRA (rollout.pool.RolloutPool.load_adapter); the base weights never move."""

    def __init__(self, trainer, pool):
        self.trainer, self.pool = trainer, pool
        self.config = trainer.adapter_config()

    def send_weights(self) -> None:
        self.pool.load_adapter(self.trainer.weights(), self.config)


def make_sender(cfg: Config, trainer, pool, backend: str):
    """The trainer engine of `backend`, initialised with the pool as its client (the engines join here); with
    LoRA adapters synced as adapters, the AdapterSender instead."""
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    from rollout.transfer import NAME, PurerlTrainerInitInfo, register

    if cfg.model.lora.rank and cfg.rollout.lora_sync == "adapter":
        return AdapterSender(trainer, pool)
    register()
    if backend == NAME:
        return WeightTransferTrainerFactory.trainer_init(PurerlTrainerInitInfo(rank=0), client=pool, source=trainer)
    if not hasattr(trainer, "policy"):
        raise ConfigError(f"={backend} sends from the trainer process: it needs trainer.ranks=1 (the GPU trainer "
                          "ranks do not run it yet)", "rollout.weight_transfer")
    return WeightTransferTrainerFactory.trainer_init(gpu_init_info(cfg, backend), client=pool,
                                                     source=_module_source(trainer.policy))


def gpu_init_info(cfg: Config, backend: str):
    """vLLM's trainer init info for its GPU backends: NCCL's group is the trainer (rank 0) and every engine's
    workers (the pool gives each engine its own rank offset); IPC needs no rendezvous. Not run on a GPU yet."""
    if backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        return IPCTrainerInitInfo(rank=0)
    if backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo
        from vllm.utils.network_utils import get_ip, get_open_port

        workers = cfg.rollout.num_engines  # one worker per engine (tensor parallelism comes with the GPU path)
        return NCCLTrainerInitInfo(master_address=get_ip(), master_port=get_open_port(), world_size=1 + workers, rank=0)
    raise ConfigError(f"={backend}: purerl drives the purerl, nccl and ipc backends", "rollout.weight_transfer")


def _module_source(model):
    from vllm.distributed.weight_transfer import ModuleSource

    return ModuleSource(model)


@contextmanager
def trainer_turn(pool, colocated: bool) -> Iterator[None]:
    """Colocated engines sleep while the trainer works (vLLM's sleep mode, level 1: weights off the GPU, KV cache
    dropped), and get their weights back before the sync. A no-op for engines of their own."""
    if colocated:
        pool.sleep(1)
    yield
    if colocated:
        pool.wake_up(["weights"])


def sync_weights(sender, pool, trainer, version: int, colocated: bool = False) -> dict[str, float]:
    """Pushes the trainer's weights into the pool's live engines as weight version `version` (colocated engines
    then get their KV cache back); returns the sync metrics."""
    t = time.perf_counter()
    pool.next_version = version
    sender.send_weights()
    if colocated:
        pool.wake_up(["kv_cache"])
    seconds = time.perf_counter() - t
    moved = trainer.weight_bytes() * len(pool.live())  # bytes from the trainer to the engines
    return {
        "time/sync": seconds,
        "sync/engine_load_s": pool.load_s,  # the slowest engine's in-place load, inside time/sync
        "sync/bytes": moved,
        "sync/gb_per_s": moved / max(seconds, 1e-9) / 1e9,
        "sync/weight_version": version,
    }
