"""The `purerl` weight-transfer backend: purerl's CPU transport behind vLLM's RL lifecycle.

vLLM drives it: `init_weight_transfer_engine` once, then `start_weight_update` -> `update_weights` (one or more
chunks) -> `finish_weight_update(weight_version=...)` per sync. A chunk is packed buffers from the object store,
a handle to the same in /dev/shm (same-node engines), or plain (name, tensor) pairs; chunks are staged and
loaded together at `finish` (by the proven direct map, or vLLM's reload plus the CPU expert repack). Every sync
must carry the same tensors as the first (names, dtypes, shapes): vLLM's loader does not check, and a wrong
shape loads silently as garbage.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

from rollout.shared_memory import SharedHandle, open_shared, release_shared
from rollout.transport import PackedWeights, unpack_tensors
from rollout.vllm_ext.reload import Loader

NAME = "purerl"


@dataclass
class PurerlInitInfo(WeightTransferInitInfo):
    """Nothing to rendezvous: the weights come through Ray's object store or /dev/shm."""


@dataclass
class PurerlUpdateInfo(WeightTransferUpdateInfo):
    """One chunk of a sync: exactly one of the three is set."""

    packed: PackedWeights | None = None  # buffers per dtype, from Ray's object store (read-only views)
    shared: SharedHandle | None = None  # where the driver packed them in /dev/shm (engines on its node)
    items: list[tuple[str, torch.Tensor]] | None = None  # (name, tensor) pairs, in the engine's process


class PurerlEngine(WeightTransferEngine[PurerlInitInfo, PurerlUpdateInfo]):
    init_info_cls = PurerlInitInfo
    update_info_cls = PurerlUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model):
        super().__init__(config, vllm_config, device, model)
        self.loader = Loader(vllm_config, model)
        self.staged: list[tuple[str, torch.Tensor]] = []
        self.layout: dict[str, tuple[torch.dtype, tuple[int, ...]]] | None = None  # what every sync must carry
        self.calls: Counter[str] = Counter()  # lifecycle calls, for the test that proves they happen
        self.last: dict = {}  # the last sync: path taken, tensors, seconds inside finish

    def init_transfer_engine(self, init_info: PurerlInitInfo) -> None:
        self.calls["init"] += 1

    def start_weight_update(self) -> None:
        self.calls["start"] += 1
        self.staged = []

    def receive_weights(self, update_info: PurerlUpdateInfo) -> None:
        self.calls["update"] += 1
        given = [x for x in (update_info.packed, update_info.shared, update_info.items) if x is not None]
        if len(given) != 1:
            raise ValueError(f"purerl weight update: give exactly one of packed, shared, items (got {len(given)})")
        if update_info.items is not None:
            items = list(update_info.items)
        elif update_info.shared is not None:
            items = unpack_tensors(open_shared(update_info.shared))
        else:
            release_shared()  # the driver stopped using shared memory: its pages can go
            items = unpack_tensors(update_info.packed)
        self._check_chunk(items)
        self.staged += items

    def finish_weight_update(self) -> None:
        self.calls["finish"] += 1
        t = time.perf_counter()
        items, self.staged = self.staged, []
        self._check_complete(items)
        path = self.loader.load(items)
        self.last = {"path": path, "tensors": len(items), "seconds": time.perf_counter() - t}

    def shutdown(self) -> None:
        release_shared()

    def _check_chunk(self, items: list[tuple[str, torch.Tensor]]) -> None:
        """After the first sync, which fixes the tensors every later one carries: an unknown or reshaped tensor
        is refused as it arrives."""
        if self.layout is None:
            return
        bad = [n for n, t in items if self.layout.get(n) != (t.dtype, tuple(t.shape))]
        if bad:
            raise ValueError(f"purerl weight update does not match the first sync: unknown tensor, or another dtype "
                             f"or shape, for {bad[:3]}")

    def _check_complete(self, items: list[tuple[str, torch.Tensor]]) -> None:
        """The sync's tensors, all chunks together: each once, and (after the first sync) every one of them."""
        got = {n: (t.dtype, tuple(t.shape)) for n, t in items}
        if len(got) != len(items):
            raise ValueError("purerl weight update: a tensor name appears twice")
        if self.layout is None:
            self.layout = got
        elif got != self.layout:
            missing = sorted(set(self.layout) - set(got))
            raise ValueError(f"purerl weight update does not match the first sync: missing {missing[:3]} "
                             f"({len(missing)} tensors)")
