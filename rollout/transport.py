"""The purerl transport's wire format: many named tensors packed into one flat buffer per dtype.

The trainer's `rl.trainer.export.checkpoint_tensors` gives checkpoint names (one per expert); `pack_tensors`
lays them out for Ray's object store or a /dev/shm file (rollout/shared_memory.py); the engine's `purerl`
backend (rollout/vllm_ext/backend.py) reads them back with `unpack_tensors`, as views.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PackedWeights:
    """Many named tensors as one flat byte buffer per dtype: one object for Ray to move instead of hundreds.

    The buffers are numpy uint8 arrays because Ray stores numpy arrays out of band (no pickling copy; read
    zero-copy from the object store), which a torch tensor does not get: for the tiny model's 7.6 MB,
    `ray.put` took 40 ms as torch tensors and a few ms as numpy.
    """

    buffers: dict[str, np.ndarray]  # dtype name -> 1-D uint8 array
    index: list[tuple[str, str, tuple[int, ...], int]]  # (name, dtype name, shape, offset in elements)


def pack_tensors(items: list[tuple[str, torch.Tensor]], alloc=None) -> PackedWeights:
    """`alloc(nbytes per dtype name) -> uint8 array per dtype name` gives the buffers to fill (default: new
    arrays); `rollout.shared_memory` hands out views into its shared file."""
    index, offsets, sizes = [], {}, {}
    for name, t in items:
        key = str(t.dtype).removeprefix("torch.")
        index.append((name, key, tuple(t.shape), offsets.get(key, 0)))
        offsets[key] = offsets.get(key, 0) + t.numel()
        sizes[key] = t.element_size()
    nbytes = {k: n * sizes[k] for k, n in offsets.items()}
    buffers = alloc(nbytes) if alloc is not None else {k: np.empty(n, dtype=np.uint8) for k, n in nbytes.items()}
    flat = {k: torch.from_numpy(b).view(getattr(torch, k)) for k, b in buffers.items()}
    for (_, key, _, offset), (_, t) in zip(index, items):
        flat[key][offset : offset + t.numel()].copy_(t.reshape(-1))
    return PackedWeights(buffers, index)


def unpack_tensors(packed: PackedWeights) -> list[tuple[str, torch.Tensor]]:
    """Views into the buffers, in the packed order (read-only when they come from the object store: the engine
    copies them into its parameters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flat = {k: torch.from_numpy(v).view(getattr(torch, k)) for k, v in packed.buffers.items()}
    out = []
    for name, key, shape, offset in packed.index:
        numel = math.prod(shape)
        out.append((name, flat[key][offset : offset + numel].view(shape)))
    return out
