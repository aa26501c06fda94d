"""The trainer's MoE experts: transformers' grouped-matmul path with gathers whose backward is a gather too.

transformers 5 runs every MoE block's experts through `ExpertsInterface`, chosen by `experts_implementation`.
Its `grouped_mm` path sorts the (token, expert) pairs by expert, gathers hidden states with `x[perm // k]` and
restores the order with `y[inverse]`; autograd turns both into `index_put_(accumulate=True)`, a serial scatter
on CPU that took 16% of a forward + backward of the tiny model. Both moves are permutations, so here each is an
autograd function whose backward is the inverse gather (and a sum over a token's k copies). The matmuls, the
gate and the sums are those of transformers, so values and gradients match `grouped_mm` and `eager`
(tests/test_experts.py); forward + backward of the tiny model drops by about a fifth (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NAME = "purerl"
"""`model.experts_implementation` value that selects this implementation (the default)."""


class _Rows(torch.autograd.Function):
    """y = x[index] where `index` holds every row of x exactly `repeats` times and `inverse` orders y back into
    x's rows, each repeated `repeats` times in a row: then dL/dx = (dL/dy)[inverse] summed over the repeats."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Tensor, repeats: int) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.repeats = repeats
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        grad = grad.index_select(0, inverse)
        if ctx.repeats > 1:
            grad = grad.view(-1, ctx.repeats, *grad.shape[1:]).sum(1)
        return grad, None, None, None


def _can_group(x: Tensor) -> bool:
    """torch's grouped matmul runs on CPU in any float dtype, on CUDA in bf16 from compute capability 8.0."""
    if not hasattr(F, "grouped_mm"):
        return False
    if x.device.type == "cpu":
        return True
    return x.device.type == "cuda" and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)


def grouped_linear(x: Tensor, weight: Tensor, counts: Tensor, transposed: bool, grouped: bool | None = None) -> Tensor:
    """Rows of x sorted by expert, counts[e] of them for expert e; weight (E, out, in), or (E, in, out) when
    transposed. `grouped=False` loops over the experts instead of torch's grouped matmul (None: whichever runs)."""
    w = weight if transposed else weight.transpose(-2, -1)  # (E, in, out)
    if grouped if grouped is not None else _can_group(x):
        return F.grouped_mm(x.to(w.dtype), w, offs=torch.cumsum(counts, 0, dtype=torch.int32))
    return torch.cat([xe @ we for xe, we in zip(x.split(counts.tolist()), w.unbind(0), strict=True)])


def experts_forward(self, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor,
                    grouped: bool | None = None) -> Tensor:
    """The experts of one MoE block (a transformers `@use_experts_implementation` module) on (T, H) hidden
    states routed to top_k_index (T, k) with gate weights top_k_weights (T, k); returns (T, H)."""
    if self.has_bias or self._is_expert_parallel:  # transformers' own path handles these
        from transformers.integrations.moe import grouped_mm_experts_forward

        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    T, k = top_k_index.shape
    expert_ids, perm = torch.sort(top_k_index.reshape(-1), stable=True)  # pair perm[i] = (token, slot) goes i-th
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    counts = torch.bincount(expert_ids, minlength=self.num_experts)
    x = _Rows.apply(hidden_states, perm // k, inverse, k)  # (T * k, H) grouped by expert
    up = self.gate_up_proj if self.has_gate else self.up_proj
    h = grouped_linear(x, up, counts, self.is_transposed, grouped)
    h = self._apply_gate(h) if self.has_gate else self.act_fn(h)
    y = grouped_linear(h, self.down_proj, counts, self.is_transposed, grouped)
    y = _Rows.apply(y, inverse, perm, 1).view(T, k, -1)  # back in (token, slot) order
    return (y * top_k_weights.unsqueeze(-1).to(y.dtype)).sum(1).to(hidden_states.dtype)


def register() -> None:
    """Makes `experts_implementation="purerl"` known to transformers (idempotent)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(NAME, experts_forward)


def implementations() -> list[str]:
    """Every name `model.experts_implementation` accepts."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    register()
    return sorted({"eager", *ALL_EXPERTS_FUNCTIONS.keys()})
