"""Everything purerl runs inside vLLM's worker, and the only place in purerl that touches vLLM's internals
(pinned to vllm 0.32.0; the parity tests guard it): the `purerl` weight-transfer backend and its direct load,
routing capture, the logger filters, all reached through one worker extension (`extension.py`)."""

from __future__ import annotations

EXTENSION = "rollout.vllm_ext.extension.PurerlWorkerExtension"
"""vLLM's `worker_extension_cls` for every purerl engine."""


def register() -> None:
    """Registers the `purerl` backend with vLLM's engine-side factory, once per process (vLLM refuses a name
    registered twice)."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    from rollout.vllm_ext.backend import NAME, PurerlEngine

    if NAME not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(NAME, PurerlEngine)


def engine_backends() -> list[str]:
    """Every backend name vLLM's engine-side factory knows (the built-ins and `purerl`)."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    register()
    return sorted(WeightTransferEngineFactory._registry)


def trainer_backends() -> list[str]:
    """Every backend name vLLM's trainer-side factory knows."""
    from vllm.distributed.weight_transfer import WeightTransferTrainerFactory

    return sorted(WeightTransferTrainerFactory._registry)
