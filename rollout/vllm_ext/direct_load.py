"""Loading synced weights into a CPU vLLM engine without vLLM's loader walk, by a map proven against it.

vLLM's `reload_weights` walks its loader per tensor and per layer; on the tiny MoE that Python is most of the
engine's load. After vLLM's own first load, the engine learns where each checkpoint tensor lands (`learn`):
per-expert tensors go to a fused-MoE layer's `w13_weight`/`w2_weight`, the rest to a parameter of the same name
or to its shard of a merged one (q/k/v -> `qkv_proj`, by the model's `packed_modules_mapping`). The map is used
only once proven: loading the same weights by it must leave every parameter and every layer's output on a
probe bit-identical to vLLM's load, and loading different weights must change all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# A per-expert checkpoint name: the decoder layer, the expert, and its projection. Mixtral names them w1/w3/w2.
_EXPERT_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\..*\bexperts\.(\d+)\.(\w+)\.weight$")
_SHARD = {"gate_proj": "w1", "w1": "w1", "up_proj": "w3", "w3": "w3", "down_proj": "w2", "w2": "w2"}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def cpu_moe_layers(model: torch.nn.Module) -> dict[torch.nn.Module, object]:
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


def repack_moe(model: torch.nn.Module) -> int:
    """Redo vLLM's post-load expert processing that `reload_weights` skips.

    On CPU the fused-MoE kernel prepacks `w13_weight`/`w2_weight` into its own layout after the first
    load; a reload writes checkpoint layout back into those tensors and the kernel then misreads them
    (logprobs moved by ~0.2 in our measurement). Re-running the kernel's own prepack restores parity.
    Pinned to the vLLM version in scripts/install.sh; the parity test guards it.
    """
    layers = cpu_moe_layers(model)
    for module, fused in layers.items():
        fused.process_weights_after_loading(module)
    return len(layers)


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
    for module, fused in cpu_moe_layers(model).items():
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


@dataclass
class DensePlan:
    """Where every other checkpoint tensor goes: name -> (module, parameter name, first row in it)."""

    slots: dict[str, tuple[torch.nn.Module, str, int]]
    # Parameters the CPU linear layers dropped after packing them into their kernel (vLLM keeps an empty
    # tensor): (module, name) -> the full shape and dtype to rebuild before the kernel packs them again.
    rebuilt: dict[tuple[torch.nn.Module, str], tuple[tuple[int, ...], torch.dtype]]


def _destination(model: torch.nn.Module, name: str, merged: dict[str, tuple[str, int, int]]):
    """(module, parameter name, (shard index, shard count) or None) for a checkpoint name: the parameter of
    that name, else its shard of a merged layer; None when neither exists."""
    module_name, _, param = name.rpartition(".")
    parent, _, leaf = module_name.rpartition(".")
    candidates = [(module_name, None)]
    if leaf in merged:
        candidates.append((f"{parent}.{merged[leaf][0]}", merged[leaf][1:]))
    for candidate, shard in candidates:
        try:
            module = model.get_submodule(candidate)
        except AttributeError:
            continue
        if param in module._parameters:
            return module, param, shard
    return None


def dense_plan(model: torch.nn.Module, items: list[tuple[str, torch.Tensor]], skip: set[str]) -> DensePlan | None:
    """The plan for the tensors not in `skip`, or None unless it writes every parameter of every module outside
    the fused-MoE layers, each row of it exactly once (another naming, a renamed prefix, a sharded engine)."""
    packed = getattr(model, "packed_modules_mapping", None) or {}
    merged = {leaf: (fused, i, len(leaves)) for fused, leaves in packed.items() for i, leaf in enumerate(leaves)}
    slots, spans, rebuilt = {}, {}, {}
    for name, t in items:
        if name in skip:
            continue
        dest = _destination(model, name, merged) if t.dim() else None  # rows are what a slot places
        if dest is None:
            return None
        module, param, shard = dest
        sizes = getattr(module, "output_sizes", None)
        if shard is not None and (sizes is None or len(sizes) != shard[1]):
            return None
        start = 0 if shard is None else sum(sizes[: shard[0]])
        p = module._parameters[param]
        if p.numel():
            full = tuple(p.shape)
        else:
            full = (t.shape[0] if shard is None else sum(sizes), *t.shape[1:])
            rebuilt[(module, param)] = (full, p.dtype)
        if full[1:] != tuple(t.shape[1:]) or start + t.shape[0] > full[0]:
            return None
        slots[name] = (module, param, start)
        spans.setdefault((module, param), []).append((start, start + t.shape[0]))
    moe = cpu_moe_layers(model)
    targets = {(m, n) for m in model.modules() if m not in moe for n, p in m._parameters.items() if p is not None}
    if set(spans) != targets:
        return None
    for key, rows in spans.items():  # no row written twice; a rebuilt parameter written whole
        rows.sort()
        if any(a[1] > b[0] for a, b in zip(rows, rows[1:])):
            return None
        if key in rebuilt and sum(b - a for a, b in rows) != rebuilt[key][0][0]:
            return None
    return DensePlan(slots, rebuilt)


@torch.no_grad()
def load_dense(plan: DensePlan, tensors: dict[str, torch.Tensor]) -> None:
    """Copies each tensor into its rows, then lets each layer's own `process_weights_after_loading` pack it
    for its CPU kernel, as vLLM does after loading."""
    staged = {}
    for name, (module, param, start) in plan.slots.items():
        key = (module, param)
        if key not in staged:
            shape, dtype = plan.rebuilt.get(key, (None, None))
            staged[key] = torch.empty(shape, dtype=dtype) if shape else module._parameters[param].data
        t = tensors[name]
        staged[key][start : start + t.shape[0]].copy_(t)
    for (module, param), data in staged.items():
        if (module, param) in plan.rebuilt:
            setattr(module, param, torch.nn.Parameter(data, requires_grad=False))
    for module in dict.fromkeys(m for m, _ in staged):
        method = getattr(module, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)


@dataclass
class DirectPlan:
    """A CPU engine's whole map: the experts (if the model has fused-MoE layers) and the other tensors."""

    experts: ExpertPlan | None
    dense: DensePlan | None  # None: the other tensors still go through vLLM's reload_weights


def load_direct(plan: DirectPlan, tensors: dict[str, torch.Tensor]) -> None:
    if plan.dense is not None:
        load_dense(plan.dense, tensors)
    if plan.experts is not None:
        load_experts(plan.experts, tensors)


def _modules(plan: DirectPlan) -> list[torch.nn.Module]:
    experts = [m for m, _ in plan.experts.layers.values()] if plan.experts else []
    return experts + (list(dict.fromkeys(m for m, _, _ in plan.dense.slots.values())) if plan.dense else [])


@torch.no_grad()
def fingerprint(plan: DirectPlan) -> list[torch.Tensor]:
    """What a load by this plan must reproduce: every parameter it writes, and each packed layer's output on a
    fixed probe (the CPU linear layers keep their weights only inside their kernel)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for module in _modules(plan):
        out += [p.detach().clone() for p in module._parameters.values() if p is not None and p.numel()]
        method, weight = getattr(module, "quant_method", None), module._parameters.get("weight")
        if plan.dense is None or weight is None or not hasattr(method, "apply") or hasattr(module, "w13_weight"):
            continue
        shape, dtype = plan.dense.rebuilt.get((module, "weight"), (tuple(weight.shape), weight.dtype))
        out.append(method.apply(module, torch.randn(4, shape[-1], generator=gen).to(dtype)))
    return out


def proves(plan: DirectPlan, items: list[tuple[str, torch.Tensor]]) -> bool:
    """Right after vLLM's own load of `items`: True if loading other weights by the plan changes everything the
    plan covers (so it misses nothing) and loading `items` again reproduces vLLM's result bit for bit. Leaves
    the engine holding `items` by the plan's load either way (the caller reloads by vLLM's on False)."""
    want = fingerprint(plan)
    load_direct(plan, {n: t + 1 for n, t in items})
    moved = all(not torch.equal(a, b) for a, b in zip(fingerprint(plan), want))
    load_direct(plan, dict(items))
    got = fingerprint(plan)
    return moved and len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
