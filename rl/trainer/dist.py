"""torch.distributed helpers for the trainer ranks.

Every rank trains on its rows of each mini-batch (rl.trainer.micro). Losses are normalised by the mini-batch's global counts, so the
ranks' losses sum to the one-rank loss.

trainer.sharding=replicate: every rank holds the whole policy; gradients are summed with one all-reduce per
optimizer step (DDP's arithmetic). We do not wrap the model in `DistributedDataParallel`: its per-backward hooks
need every rank to run the same number of micro-batches and to touch the same parameters, and an MoE layer
routes each rank's tokens to different experts. Plain all-reduces: gloo here, and NCCL would run them unchanged.

trainer.sharding=fsdp: `shard_model` (FSDP2); every rank then takes part in every forward (as many passes as the
busiest rank) and in gathering the whole state (`full_state`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sums each tensor over the ranks, in place (one collective for all of them); a no-op on one rank."""
    if world()[1] == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def all_reduce_grads_(params: list[torch.nn.Parameter]) -> None:
    """Sums the gradients over the ranks in one flat buffer; a parameter with no gradient counts as zeros."""
    if world()[1] == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def shard_model(model: torch.nn.Module, device: torch.device | None = None, mp_dtype: torch.dtype | None = None) -> None:
    """FSDP2 over the process group (the policy, and the frozen reference the same way): one unit per decoder
    layer (the model's `_no_split_modules`), then the root. `mp_dtype` (bf16): FSDP2's MixedPrecisionPolicy,
    parameters gathered in that dtype for compute, gradients reduced in fp32, the fp32 shards kept as masters.
    FSDP averages the ranks' gradients; each rank's loss uses the global counts, so `rl.trainer.update` scales it by the
    world size to make that average the sum (gloo has no PREMUL_SUM for `set_gradient_divide_factor(1)`)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    layers = decoder_layers(model)
    mesh = init_device_mesh((device or torch.device("cpu")).type, (world()[1],))
    policy = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32) if mp_dtype else MixedPrecisionPolicy()
    for m in [*layers, model]:
        fully_shard(m, mesh=mesh, mp_policy=policy)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers (its `_no_split_modules` classes): the units of FSDP and of checkpointing."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to shard or "
                         "checkpoint by; use trainer.sharding=replicate and trainer.activation_checkpointing=false")
    return layers


def load_sharded(make_full, make_empty, device: torch.device, mp_dtype: torch.dtype | None) -> torch.nn.Module:
    """An FSDP2 model whose weights only rank 0 reads: rank 0 builds it with `make_full()`, every other rank
    with `make_empty()` on the meta device; after sharding, rank 0's state is broadcast and each rank keeps its
    shard (N ranks do not each load the whole model). Buffers no checkpoint holds (rotary tables) are broadcast
    too."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    rank = world()[0]
    model = make_full() if rank == 0 else make_empty()
    persistent = set(model.state_dict())
    full = {k: v.detach().clone() for k, v in model.state_dict().items()} if rank == 0 else {}
    shard_model(model, device, mp_dtype)
    if rank != 0:
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for name, buf in model.named_buffers():
        if name not in persistent:
            dist.broadcast(buf.data, src=0)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict gathered from the shards, on rank 0 (None on the others). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if world()[0] == 0 else None
