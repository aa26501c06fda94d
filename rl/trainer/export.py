"""The trainer's weights in the layout the engines load: checkpoint names, one tensor per expert."""

from __future__ import annotations

import torch


def checkpoint_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in checkpoint layout, detached on CPU; fused experts are split per expert.
    `state`: the model's whole state dict when the model itself holds only a shard of it (FSDP).

    transformers 5 keeps MoE experts fused in memory while checkpoints and vLLM's loader name each expert; its own
    inverse of the load-time conversion covers every MoE family it knows."""
    from transformers.core_model_loading import revert_weight_conversion

    state = {k: v.detach() for k, v in (model.state_dict() if state is None else state).items()}
    state = revert_weight_conversion(model, state)
    return [(k, v.to("cpu", copy=False).contiguous()) for k, v in state.items()]
