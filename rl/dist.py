"""torch.distributed helpers for the sharded trainer: DDP's arithmetic, done once per optimizer step.

Every rank holds the whole policy and trains on its rows of each mini-batch. Losses are normalised by the
mini-batch's global counts, so the ranks' losses sum to the one-rank loss; gradients are then summed with one
all-reduce per optimizer step. We do not wrap the model in `DistributedDataParallel`: its per-backward hooks
need every rank to run the same number of micro-batches and to touch the same parameters, and an MoE layer
routes each rank's tokens to different experts. Plain all-reduces: gloo here, and NCCL would run them unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of n that `rank` trains on: contiguous, sizes differing by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


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
