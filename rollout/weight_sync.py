"""Pushing trainer weights into a running vLLM engine in place, and the MoE fix-up that needs.

Trainer side: `checkpoint_tensors` turns a transformers model's state into checkpoint names
(transformers 5 keeps experts fused; vLLM's loader wants one name per expert).
Engine side: `reload_in_place` runs on the vLLM worker through `collective_rpc`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


def checkpoint_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint layout, detached on CPU; fused experts are split per expert."""
    from transformers.core_model_loading import revert_weight_conversion

    state = {k: v.detach() for k, v in model.state_dict().items()}
    # transformers' own inverse of its load-time conversion, so every MoE family it knows is covered.
    state = revert_weight_conversion(model, state)
    return [(k, v.to("cpu", copy=False).contiguous()) for k, v in state.items()]


@dataclass
class PackedWeights:
    """Many named tensors as one flat byte buffer per dtype: one object for Ray to move instead of hundreds.

    The buffers are numpy uint8 arrays because Ray stores numpy arrays out of band (no pickling copy; read
    zero-copy from the object store), which a torch tensor does not get: for the tiny model's 7.6 MB,
    `ray.put` took 40 ms as torch tensors and a few ms as numpy.
    """

    buffers: dict[str, np.ndarray]  # dtype name -> 1-D uint8 array
    index: list[tuple[str, str, tuple[int, ...], int]]  # (name, dtype name, shape, offset in elements)


def pack_tensors(items: list[tuple[str, torch.Tensor]]) -> PackedWeights:
    index, offsets, sizes = [], {}, {}
    for name, t in items:
        key = str(t.dtype).removeprefix("torch.")
        index.append((name, key, tuple(t.shape), offsets.get(key, 0)))
        offsets[key] = offsets.get(key, 0) + t.numel()
        sizes[key] = t.element_size()
    buffers = {k: np.empty(n * sizes[k], dtype=np.uint8) for k, n in offsets.items()}
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


def _repack_moe(model: torch.nn.Module) -> int:
    """Redo vLLM's post-load expert processing that `reload_weights` skips.

    On CPU the fused-MoE kernel prepacks `w13_weight`/`w2_weight` into its own layout after the first
    load; a reload writes checkpoint layout back into those tensors and the kernel then misreads them
    (logprobs moved by ~0.2 in our measurement). Re-running the kernel's own prepack restores parity.
    Pinned to the vLLM version in scripts/install.sh; the parity test guards it.
    """
    count = 0
    for module in model.modules():
        if not hasattr(module, "w13_weight"):
            continue
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        fused = getattr(kernel, "fused_experts", None)
        if fused is not None and hasattr(fused, "process_weights_after_loading"):
            fused.process_weights_after_loading(module)
            count += 1
    return count


def reload_in_place(worker, items: list[tuple[str, torch.Tensor]]) -> int:
    """Runs inside the vLLM worker (via `LLM.collective_rpc`). Returns how many MoE layers were repacked."""
    worker.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)
    model = worker.model_runner.model
    return _repack_moe(model) if model.parameters().__next__().device.type == "cpu" else 0


def push_weights(llm, items: list[tuple[str, torch.Tensor]]) -> int:
    """Loads `items` into a running engine; the KV cache is reset because it was computed by old weights."""
    repacked = llm.collective_rpc(reload_in_place, args=(items,))
    llm.reset_prefix_cache()
    return int(repacked[0])
