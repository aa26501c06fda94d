"""Where the trainer computes and in what precision: trainer.device and trainer.mixed_precision resolved."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from rl.config import Config
from rl.errors import ConfigError


def trainer_device(cfg: Config) -> torch.device:
    """`auto`: cuda when this rank has a GPU (Ray gave it one, or the driver sees one for trainer.ranks=1 with
    trainer.rank_gpus > 0), else cpu. `cuda` without a visible GPU is an error naming the key."""
    choice = cfg.trainer.device
    if choice == "auto":
        choice = "cuda" if cfg.trainer.rank_gpus > 0 and torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("=cuda, but this process sees no GPU (CUDA_VISIBLE_DEVICES, trainer.rank_gpus)", "trainer.device")
    return torch.device("cuda", torch.cuda.current_device()) if choice == "cuda" else torch.device("cpu")


def compute_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 when mixed precision is on (trainer.mixed_precision, `auto`: on for cuda), else None (the weights'
    own dtype). The master weights stay in model.dtype."""
    mode = cfg.trainer.mixed_precision
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "off"
    return torch.bfloat16 if mode == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None, sharded: bool):
    """The forward's precision context: autocast to `dtype` unless FSDP's MixedPrecisionPolicy does the casting
    (sharded), or there is no compute dtype."""
    if dtype is None or sharded:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
