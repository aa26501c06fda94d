"""Pushing trainer weights into a running vLLM engine in place, and the MoE fix-up that needs.

The trainer's `rl.trainer.export.checkpoint_tensors` gives checkpoint names (one per expert); `pack_tensors`
lays them in one buffer per dtype for Ray. Engine side: `reload_in_place` runs on the vLLM worker through `collective_rpc`.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from rollout.direct_load import (
    DirectPlan,
    ExpertPlan,
    cpu_moe_layers,
    dense_plan,
    expert_plan,
    load_direct,
    proves,
    repack_moe,
)


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


class _ExpectedMissing(logging.Filter):
    """Drops vLLM's warnings about weights a reload leaves out on purpose: the experts a plan loads directly,
    and the rotary embedding's cache, which no checkpoint holds (vLLM warns about it on every reload)."""

    def __init__(self, classes: set[str]):
        super().__init__()
        self.classes = classes

    def filter(self, record: logging.LogRecord) -> bool:
        msg, args = str(record.msg), record.args or ()
        if msg.endswith("Failed to load weights") and args:
            return not (args[0] in self.classes or str(args[0]).endswith("RotaryEmbedding"))
        if msg.startswith("Following weights were not loaded") and args:
            return not all(str(n).endswith(("w13_weight", "w2_weight")) for n in args[0])
        return True


def _reload(worker, items: list[tuple[str, torch.Tensor]], plan: ExpertPlan | None = None) -> None:
    """vLLM's in-place reload; with a plan, the experts are left out and vLLM's warnings about them muted."""
    import vllm.model_executor.model_loader.reload.inplace as inplace
    import vllm.model_executor.model_loader.reload.layerwise as layerwise

    quiet = _ExpectedMissing({type(m).__name__ for m, _ in plan.layers.values()} if plan else set())
    loggers = [logging.getLogger(inplace.__name__), logging.getLogger(layerwise.__name__)]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        worker.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


def reload_in_place(worker, items: list[tuple[str, torch.Tensor]]) -> str:
    """Runs inside the vLLM worker (via `LLM.collective_rpc`); returns which path loaded the weights.

    The first load goes through vLLM's `reload_weights` (plus the CPU expert repack). On CPU the engine then
    learns where each tensor lands and proves it (`rollout.direct_load`); later loads write the tensors
    straight into place ("direct"), or, if only the experts' map holds, send the rest through `reload_weights`
    ("experts"). No map, or a failed proof: every load is vLLM's ("reload").
    """
    model = worker.model_runner.model
    plan = getattr(worker, "purerl_direct_plan", None)  # None: not tried yet; False: no plan, always the walk
    if isinstance(plan, DirectPlan) and _covers(plan, items):
        if plan.dense is None:
            _reload(worker, [(n, t) for n, t in items if n not in plan.experts.slots], plan.experts)
        load_direct(plan, dict(items))
        return "direct" if plan.dense is not None else "experts"
    _reload(worker, items)
    if next(model.parameters()).device.type != "cpu":
        return "reload"
    repack_moe(model)
    if plan is None:
        worker.purerl_direct_plan = _proven_plan(worker, items)
    return "reload"


def _covers(plan: DirectPlan, items: list[tuple[str, torch.Tensor]]) -> bool:
    names = {n for n, _ in items}
    planned = set(plan.experts.slots if plan.experts else ()) | set(plan.dense.slots if plan.dense else ())
    return planned <= names if plan.dense is None else planned == names


def _proven_plan(worker, items: list[tuple[str, torch.Tensor]]) -> DirectPlan | bool:
    """Right after vLLM's own load of `items`: the widest plan that `rollout.direct_load.proves` (every
    tensor, else only the experts), or False. A plan that fails is dropped with a warning, and vLLM's own load
    of `items` is put back."""
    model = worker.model_runner.model
    moe = cpu_moe_layers(model)
    experts = expert_plan(model, [n for n, _ in items]) if moe else None
    if moe and experts is None:
        return False
    candidates = [DirectPlan(experts, None)] if experts else []
    if worker.model_runner.model_config.quantization is None:
        dense = dense_plan(model, items, set(experts.slots) if experts else set())
        candidates = ([DirectPlan(experts, dense)] if dense else []) + candidates
    for plan in candidates:
        try:
            if proves(plan, items):
                return plan
            failure = "did not reproduce vLLM's"
        except Exception as e:  # an unexpected layout: the walk still works
            failure = f"failed ({type(e).__name__}: {e})"
        what = "of every weight" if plan.dense else "of the experts"
        warnings.warn(f"weight sync: the direct load {what} {failure}; not used", stacklevel=1)
        _reload(worker, items)  # put vLLM's own result back
        repack_moe(model)
    return False


def push_weights(llm, items: list[tuple[str, torch.Tensor]]) -> str:
    """Loads `items` into a running engine; a prefix cache is reset because it was computed by old weights
    (our engines run without one, and resetting walks every KV block). Returns the load path (see
    `reload_in_place`)."""
    path = llm.collective_rpc(reload_in_place, args=(items,))
    if llm.llm_engine.vllm_config.cache_config.enable_prefix_caching:
        llm.reset_prefix_cache()
    return path[0]
