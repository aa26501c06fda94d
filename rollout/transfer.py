"""The trainer's half of the weight sync: which of vLLM's weight-transfer backends a run uses, and the trainer
engine of purerl's own (`purerl`), registered beside vLLM's so that the loop drives every backend the same way:
`WeightTransferTrainerFactory.trainer_init(info, client=pool, source=...)`, then `send_weights` per sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vllm.distributed.weight_transfer.base import TrainerInitInfo, TrainerWeightTransferEngine

NAME = "purerl"


@dataclass
class PurerlTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = NAME


class PurerlTrainerEngine(TrainerWeightTransferEngine[PurerlTrainerInitInfo]):
    """Hands the trainer's weights to the client (the rollout pool), which moves them to each engine through
    /dev/shm or Ray's object store; the engines' `purerl` backend loads them. `source` is the trainer: its
    `weights()` are (name, tensor) pairs in checkpoint names, or an ObjectRef of the PackedWeights a trainer rank
    packed. One call of `update_weights` per sync: the weights are one buffer per dtype already."""

    init_info_cls = PurerlTrainerInitInfo

    @classmethod
    def trainer_init(cls, init_info: PurerlTrainerInitInfo, *, client, source=None) -> PurerlTrainerEngine:
        if init_info.rank == 0:
            client.init_weight_transfer_engine({})  # nothing to rendezvous
        return cls(client=client, source=source, is_sender=init_info.rank == 0)

    def send_weights(self) -> None:
        """start -> update -> finish on the client (which labels the new weights with their version)."""
        weights = self.source.weights()
        if not self.is_sender:
            return
        self.client.start_weight_update()
        self.client.update_weights({"items": weights} if isinstance(weights, list) else {"packed": weights})
        self.client.finish_weight_update()


def register() -> None:
    """Registers the `purerl` trainer engine with vLLM's trainer-side factory, once per process."""
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    from rollout.vllm_ext import trainer_backends

    if NAME not in trainer_backends():
        WeightTransferTrainerFactory.register_engine(NAME, PurerlTrainerEngine)


def choose_backend(setting: str, gpus: bool, colocated: bool) -> str:
    """`rollout.weight_transfer`: `auto` is `purerl` on CPU, `ipc` for engines that share the trainer's GPUs and
    `nccl` for engines on GPUs of their own; any other value is a backend name, used as it is."""
    if setting != "auto":
        return setting
    if not gpus:
        return NAME
    return "ipc" if colocated else "nccl"
