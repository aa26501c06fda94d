"""The optimizer of the policy: AdamW with a linear warm-up, and the clipped step."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rl.config import TrainerConfig


@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def step(self, params: list[torch.nn.Parameter], grad_clip: float) -> tuple[float, float]:
        """Clips the gradients' global norm, steps the optimizer and the schedule, clears the gradients.
        Returns the norm before clipping and the seconds taken."""
        t = time.perf_counter()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), time.perf_counter() - t

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


def make_optimizer(model, t: TrainerConfig) -> Optim:
    """AdamW over the trainable parameters (frozen routers are left out), constant LR after warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    warmup = t.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    return Optim(optimizer, scheduler)
