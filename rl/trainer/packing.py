"""Sequence packing: right-padded rows (b, w) laid end to end in fewer rows (R, C), and back.

A GRPO batch pads every sequence to the longest prompt + answer; on the embedded task a third of the padded
positions are padding, and the trainer's forward and backward pay for each. Packed, the sequences share rows
(first fit, longest first, C = the longest sequence, so none is split). Each sequence's position ids restart
at 0, and transformers turns restarting position ids (with no attention mask) into a block-diagonal causal mask,
so no token sees another sequence: the logprobs are those of the padded forward (tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Packing:
    rows: int  # R
    width: int  # C
    slot: Tensor  # (b * w,) long: the flat packed index of each padded position, -1 for padding
    source: Tensor  # (R * C,) long: the flat padded index each packed slot holds, -1 for filler
    position_ids: Tensor  # (R, C) long: 0, 1, ... within each sequence (and within each row's filler)

    def pack(self, x: Tensor, fill=0) -> Tensor:
        """(b, w, ...) -> (R, C, ...); filler slots get `fill`."""
        flat = x.reshape(-1, *x.shape[2:])
        out = flat.index_select(0, self.source.clamp_min(0))
        out = out.masked_fill(_expand(self.source < 0, out), fill)
        return out.view(self.rows, self.width, *x.shape[2:])

    def unpack(self, y: Tensor, b: int) -> Tensor:
        """(R, C, ...) -> (b, w, ...); padding positions get 0. Differentiable."""
        flat = y.reshape(self.rows * self.width, *y.shape[2:])
        out = flat.index_select(0, self.slot.clamp_min(0))
        out = out.masked_fill(_expand(self.slot < 0, out), 0)
        return out.view(b, -1, *y.shape[2:])


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def plan(attention_mask: Tensor) -> Packing | None:
    """The packing of right-padded rows (attention_mask (b, w): each row's ones come first); None when a row's
    ones are not a prefix, or when packing would not remove a single row."""
    b, w = attention_mask.shape
    lengths = attention_mask.sum(1)
    if not torch.equal(attention_mask.bool(), torch.arange(w, device=attention_mask.device) < lengths[:, None]):
        return None
    n = lengths.tolist()
    width = max(n)
    fill: list[int] = []  # tokens placed in each packed row
    offsets = [0] * b  # flat packed index where each sequence starts
    for i in sorted(range(b), key=lambda i: -n[i]):  # first fit, longest first
        r = next((r for r, f in enumerate(fill) if f + n[i] <= width), len(fill))
        if r == len(fill):
            fill.append(0)
        offsets[i] = r * width + fill[r]
        fill[r] += n[i]
    if len(fill) >= b:
        return None
    rows = len(fill)
    slot = torch.full((b, w), -1, dtype=torch.long)
    source = torch.full((rows * width,), -1, dtype=torch.long)
    position_ids = torch.empty(rows * width, dtype=torch.long)
    for r, f in enumerate(fill):  # filler counts 0, 1, ... on its own, so it is a sequence of its own
        position_ids[r * width + f : (r + 1) * width] = torch.arange(width - f)
    for i in range(b):
        span = torch.arange(n[i])
        slot[i, : n[i]] = offsets[i] + span
        source[offsets[i] + span] = i * w + span
        position_ids[offsets[i] + span] = span
    device = attention_mask.device  # built on the CPU, used where the batch is
    return Packing(rows, width, slot.reshape(-1).to(device), source.to(device), position_ids.view(rows, width).to(device))
