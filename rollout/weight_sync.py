"""Pushing trainer weights into a running vLLM engine in place, and the MoE fix-up that needs.

Trainer side: `checkpoint_tensors` turns a transformers model's state into checkpoint names
(transformers 5 keeps experts fused; vLLM's loader wants one name per expert).
Engine side: `reload_in_place` runs on the vLLM worker through `collective_rpc`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch


def checkpoint_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint layout, detached on CPU; fused experts are split per expert.
    `state`: the model's whole state dict when the model itself holds only a shard of it (FSDP)."""
    from transformers.core_model_loading import revert_weight_conversion

    state = {k: v.detach() for k, v in (model.state_dict() if state is None else state).items()}
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


def _cpu_moe_layers(model: torch.nn.Module) -> dict[torch.nn.Module, object]:
    """Fused-MoE modules whose CPU kernel prepacks the expert weights after loading -> that kernel."""
    out = {}
    for module in model.modules():
        if not hasattr(module, "w13_weight"):
            continue
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        fused = getattr(kernel, "fused_experts", None)
        if fused is not None and hasattr(fused, "process_weights_after_loading"):
            out[module] = fused
    return out


def _repack_moe(model: torch.nn.Module) -> int:
    """Redo vLLM's post-load expert processing that `reload_weights` skips.

    On CPU the fused-MoE kernel prepacks `w13_weight`/`w2_weight` into its own layout after the first
    load; a reload writes checkpoint layout back into those tensors and the kernel then misreads them
    (logprobs moved by ~0.2 in our measurement). Re-running the kernel's own prepack restores parity.
    Pinned to the vLLM version in scripts/install.sh; the parity test guards it.
    """
    layers = _cpu_moe_layers(model)
    for module, fused in layers.items():
        fused.process_weights_after_loading(module)
    return len(layers)


# A per-expert checkpoint name: the decoder layer, the expert, and its projection. Mixtral names them w1/w3/w2.
_EXPERT_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\..*\bexperts\.(\d+)\.(\w+)\.weight$")
_SHARD = {"gate_proj": "w1", "w1": "w1", "up_proj": "w3", "w3": "w3", "down_proj": "w2", "w2": "w2"}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class ExpertPlan:
    """Where each per-expert checkpoint tensor goes in the engine: (decoder layer, shard w1/w3/w2, expert)."""

    slots: dict[str, tuple[int, str, int]]
    layers: dict[int, tuple[torch.nn.Module, object]]  # decoder layer -> (fused-MoE module, its CPU kernel)


def expert_plan(model: torch.nn.Module, names: list[str]) -> ExpertPlan | None:
    """The plan for these checkpoint names, or None when they do not cover every CPU fused-MoE layer's
    experts exactly once (another naming, an expert bias, several MoE modules per decoder layer, a per-expert
    tensor that is not a w1/w3/w2 weight)."""
    layers = {}
    for module, fused in _cpu_moe_layers(model).items():
        if hasattr(module, "w13_bias") or hasattr(module, "w2_bias"):
            return None
        qualified = next(n for n, m in model.named_modules() if m is module)
        found = _LAYER.search(qualified)
        if found is None or int(found.group(1)) in layers:
            return None
        layers[int(found.group(1))] = (module, fused)
    slots = {}
    for name in names:
        found = _EXPERT_NAME.search(name)
        if found is None:
            continue
        if found.group(3) not in _SHARD or int(found.group(1)) not in layers:
            return None  # an expert tensor the plan would not know where to put
        slots[name] = (int(found.group(1)), _SHARD[found.group(3)], int(found.group(2)))
    expected = {(layer, shard, e) for layer, (m, _) in layers.items() for shard in ("w1", "w3", "w2")
                for e in range(m.w13_weight.shape[0])}
    if not layers or set(slots.values()) != expected or len(slots) != len(expected):
        return None
    return ExpertPlan(slots, layers)


@torch.no_grad()
def load_experts(plan: ExpertPlan, tensors: dict[str, torch.Tensor]) -> None:
    """Writes the experts straight into each layer's `w13_weight` ([w1; w3] per expert) and `w2_weight`, in
    checkpoint layout, and lets the kernel prepack them: what vLLM's loader does, without its per-tensor walk."""
    staged = {}
    for name, (layer, shard, e) in plan.slots.items():
        t = tensors[name]
        module = plan.layers[layer][0]
        if layer not in staged:  # w13 (E, 2I, H) and w2 (E, H, I), unpadded: the kernel pads and prepacks them
            inter, hidden = t.shape if shard != "w2" else t.shape[::-1]
            n, dtype = module.w13_weight.shape[0], module.w13_weight.dtype
            staged[layer] = (torch.empty(n, 2 * inter, hidden, dtype=dtype), torch.empty(n, hidden, inter, dtype=dtype))
        w13, w2 = staged[layer]
        inter = w2.shape[2]
        target = w2[e] if shard == "w2" else w13[e, :inter] if shard == "w1" else w13[e, inter:]
        target.copy_(t)
    for layer, (w13, w2) in staged.items():
        module, fused = plan.layers[layer]
        module.w13_weight = torch.nn.Parameter(w13, requires_grad=False)
        module.w2_weight = torch.nn.Parameter(w2, requires_grad=False)
        fused.process_weights_after_loading(module)


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

    The first load goes through vLLM's `reload_weights` (plus the CPU expert repack). On CPU it then builds an
    `ExpertPlan` and proves it: loading the same experts directly must reproduce the prepacked tensors bit for
    bit. Later loads send everything but the experts through `reload_weights` and write the experts directly,
    which halves the engine's load time on the tiny MoE. No plan, or a failed proof: every load is the walk.
    """
    model = worker.model_runner.model
    plan = getattr(worker, "purerl_expert_plan", None)  # None: not tried yet; False: no plan, always the walk
    names = [n for n, _ in items]
    if isinstance(plan, ExpertPlan) and set(plan.slots) <= set(names):
        _reload(worker, [(n, t) for n, t in items if n not in plan.slots], plan)
        load_experts(plan, dict(items))
        return "direct"
    _reload(worker, items)
    if next(model.parameters()).device.type != "cpu":
        return "reload"
    _repack_moe(model)
    if plan is None:
        worker.purerl_expert_plan = _proven_plan(model, items)
    return "reload"


def _proven_plan(model: torch.nn.Module, items: list[tuple[str, torch.Tensor]]) -> ExpertPlan | bool:
    """Right after vLLM's own load of `items`: the plan if loading the same experts directly reproduces vLLM's
    prepacked tensors bit for bit, else False (with vLLM's tensors put back and a warning)."""
    plan = expert_plan(model, [n for n, _ in items])
    if plan is None:
        return False
    want = {layer: (m.w13_weight.clone(), m.w2_weight.clone()) for layer, (m, _) in plan.layers.items()}
    try:
        load_experts(plan, dict(items))
        same = all(torch.equal(m.w13_weight, want[layer][0]) and torch.equal(m.w2_weight, want[layer][1])
                   for layer, (m, _) in plan.layers.items())
        failure = "did not reproduce vLLM's"
    except Exception as e:  # an unexpected layout: the walk still works
        same, failure = False, f"failed ({type(e).__name__}: {e})"
    if not same:
        warnings.warn(f"weight sync: the direct expert load {failure}; using reload_weights only", stacklevel=1)
        for layer, (m, _) in plan.layers.items():  # put vLLM's own result back
            m.w13_weight, m.w2_weight = (torch.nn.Parameter(w, requires_grad=False) for w in want[layer])
    return plan if same else False


def push_weights(llm, items: list[tuple[str, torch.Tensor]]) -> str:
    """Loads `items` into a running engine; the KV cache is reset because it was computed by old weights.
    Returns the load path ("reload" or "direct", see `reload_in_place`)."""
    path = llm.collective_rpc(reload_in_place, args=(items,))
    llm.reset_prefix_cache()
    return path[0]
