"""Weights for the engines on the driver's node through one file in /dev/shm instead of Ray's object store.

The driver packs the weights straight into a file it keeps mapped; an engine on the same node maps that file
read-only and loads straight from it. That skips `ray.put` (10 ms of the tiny model's 7.6 MB on the 2-core box)
and the object store's own copy. Engines on other nodes still get the weights through the object store.

The driver writes only while no engine reads: `RolloutPool.update_weights` waits for every engine to finish
loading before it returns, and the next write is the next sync.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rollout.transport import PackedWeights, pack_tensors

SHM_DIR = Path("/dev/shm")
PREFIX = "purerl-weights-"
ALIGN = 64  # each dtype's region starts on a cache line, so its bytes view as that dtype


@dataclass
class SharedHandle:
    """What an engine needs to map the weights: the file, and where each dtype's buffer lies in it."""

    path: str
    regions: dict[str, tuple[int, int]]  # dtype name -> (offset, nbytes)
    index: list[tuple[str, str, tuple[int, ...], int]]  # as PackedWeights.index


def regions_of(nbytes: dict[str, int]) -> tuple[dict[str, tuple[int, int]], int]:
    """Aligned (offset, nbytes) per dtype buffer, and the file size that holds them all."""
    regions, end = {}, 0
    for key, n in nbytes.items():
        regions[key] = (end, n)
        end += -(-n // ALIGN) * ALIGN
    return regions, end


def has_room(nbytes: int, folder: Path = SHM_DIR) -> bool:
    """A tmpfs write past its size kills the writer with SIGBUS, so check first (Docker gives /dev/shm 64 MB)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize > 2 * nbytes  # leave room: Ray's object store may live there too


class SharedWeights:
    """The driver's side: one file in /dev/shm, grown when the weights do, removed by `close`."""

    def __init__(self, folder: Path = SHM_DIR):
        remove_stale(folder)
        self.path = folder / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.map: mmap.mmap | None = None
        self.fd: int | None = None  # held open with an flock while the file is ours (remove_stale)
        self.size = 0
        self.regions: dict[str, tuple[int, int]] = {}

    def reserve(self, nbytes: int) -> bool:
        """Makes the file hold `nbytes` of weights (plus alignment) with every page allocated now, so a later
        write cannot hit a full tmpfs (SIGBUS); False when /dev/shm has no room for it."""
        size = nbytes + ALIGN * 8
        if size <= self.size:
            return True
        if not has_room(size, self.path.parent):
            return False
        try:
            self._grow(size)
        except OSError:
            return False
        return True

    def pack(self, items: list[tuple[str, torch.Tensor]]) -> tuple[PackedWeights, SharedHandle]:
        """Packs `items` straight into the file: the packing copy is the only copy on this node."""
        packed = pack_tensors(items, alloc=self._views)
        return packed, SharedHandle(str(self.path), self.regions, packed.index)

    def write(self, packed: PackedWeights) -> SharedHandle:
        """Copies weights packed elsewhere into the file."""
        views = self._views({k: b.nbytes for k, b in packed.buffers.items()})
        for key, buf in packed.buffers.items():
            views[key][:] = buf
        return SharedHandle(str(self.path), self.regions, packed.index)

    def _views(self, nbytes: dict[str, int]) -> dict[str, np.ndarray]:
        self.regions, size = regions_of(nbytes)
        if size > self.size:
            self._grow(size)
        data = np.frombuffer(self.map, dtype=np.uint8)
        return {key: data[offset : offset + n] for key, (offset, n) in self.regions.items()}

    def _grow(self, size: int) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, size)
        os.posix_fallocate(self.fd, 0, size)
        self.map = mmap.mmap(self.fd, size)  # an older, smaller map is freed once no view of it is left
        self.size = size

    def close(self) -> None:
        self.map = None  # unmapped when the last view of it goes
        self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def remove_stale(folder: Path = SHM_DIR) -> None:
    """Files left by drivers that were killed (SIGKILL skips `close`): no process holds their lock any more."""
    for f in folder.glob(f"{PREFIX}*"):
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.unlink(missing_ok=True)
        except OSError:
            pass  # a live driver holds it
        finally:
            os.close(fd)


_maps: dict[str, tuple[int, mmap.mmap]] = {}  # engine side: path -> (size, read-only map), kept across syncs


def release_shared() -> None:
    """The engine's side: drop the maps (the driver stopped using shared memory, so its pages can go)."""
    _maps.clear()


def open_shared(handle: SharedHandle) -> PackedWeights:
    """The engine's side: the weights as read-only views into the driver's file (no copy)."""
    size = max(offset + nbytes for offset, nbytes in handle.regions.values())
    cached = _maps.get(handle.path)
    if cached is None or cached[0] < size:
        with open(handle.path, "rb") as f:
            _maps[handle.path] = (size, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    data = np.frombuffer(_maps[handle.path][1], dtype=np.uint8)
    buffers = {key: data[offset : offset + nbytes] for key, (offset, nbytes) in handle.regions.items()}
    return PackedWeights(buffers, handle.index)
