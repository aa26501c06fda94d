"""Capturing the experts vLLM routed every token to, on engines without native support (vLLM CPU).

vLLM 0.32 returns routed experts only with Model Runner V2, which needs Triton, so on CPU we hook the engine:
- a wrapper on the model runner's `_prepare_inputs` records the step's batch layout: the request ids in batch
  order and how many tokens each one has in this forward;
- a forward hook on every MoE layer's router (`rl.families.is_router`) takes its router logits (num_tokens, E), picks the
  experts as vLLM's router does (`rl.families.Routing.choose` for the engine's own config: top-k of the softmax,
  or DeepSeek-V3's group-limited top-k of sigmoid scores plus the router's correction bias), and files each
  request's rows.
A request's rows concatenate, in order, to its routing at positions 0 .. prompt_len + generated - 2 (every
token that was fed to the model; the last sampled token never is). Prefix caching must be off (it is).
This reaches into vLLM internals of the pinned version; `tests/test_e2e.py` guards it (`moe/routing_agreement`
of a real run), `tests/test_routing.py` the bookkeeping.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from rl.families import ROUTER_BIAS, is_router, routing_of


class RoutingCapture:
    """Installed on one vLLM worker (by the worker extension); `take()` returns and clears what it holds."""

    def __init__(self, worker, top_k: int):
        runner = worker.model_runner
        self.runner, self.routing = runner, routing_of(runner.model_config.hf_config)
        if self.routing is None or self.routing.top_k != top_k:
            raise ValueError(f"routing capture: the engine's model config routes to "
                             f"{None if self.routing is None else self.routing.top_k} experts per token, the trainer's "
                             f"to {top_k}: are both the same model?")
        self.layout: list[tuple[str, int]] | None = None
        self.step: dict[int, torch.Tensor] = {}  # layer -> (N, k) of the current forward
        self.rows: dict[str, list[torch.Tensor]] = defaultdict(list)  # request -> [(n, layers, k)] chunks
        gates = [m for n, m in runner.model.named_modules() if is_router(n)]
        self.num_layers = len(gates)
        self.handles = [g.register_forward_hook(self._hook(i)) for i, g in enumerate(gates)]
        original = runner._prepare_inputs

        def prepare_inputs(scheduler_output, num_scheduled_tokens, *args, **kwargs):
            self._flush()
            ids = runner.input_batch.req_ids[: len(num_scheduled_tokens)]
            self.layout = list(zip(ids, (int(n) for n in num_scheduled_tokens)))
            return original(scheduler_output, num_scheduled_tokens, *args, **kwargs)

        runner._prepare_inputs = prepare_inputs
        self._original = original

    def _hook(self, layer: int):
        def hook(module, args, out):
            if self.layout is None:  # warm-up and profiling passes
                return
            logits = out[0] if isinstance(out, tuple) else out
            chosen = self.routing.choose(logits.detach(), getattr(module, ROUTER_BIAS, None))  # (N, k)
            self.step[layer] = chosen.to(torch.int16)

        return hook

    def _flush(self) -> None:
        """Files the last forward's routing under its requests: one split per forward, not per layer."""
        counts = [n for _, n in self.layout or []]
        if self.layout is not None and len(self.step) == self.num_layers and self.step[0].shape[0] >= sum(counts):
            stacked = torch.stack([self.step[i][: sum(counts)] for i in range(self.num_layers)], dim=1).cpu()
            for (req_id, _), chunk in zip(self.layout, torch.split(stacked, counts)):
                self.rows[req_id].append(chunk)
        self.step, self.layout = {}, None

    def take(self) -> dict[tuple[str, int], torch.Tensor]:
        """(request id as `LLM.generate` reports it, sample index) -> (tokens fed, layers, k) int16, for every
        sample seen since the last call."""
        self._flush()
        out = {parse_request_id(req_id): torch.cat(chunks) for req_id, chunks in self.rows.items()}
        self.rows.clear()
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.runner._prepare_inputs = self._original


def parse_request_id(engine_id: str) -> tuple[str, int]:
    """(request id as `LLM.generate` reports it, sample index) from the engine's id of one sample.

    With n > 1 the engine runs one child per sample, `{index}_{parent}` (v1/engine/parallel_sampling.py), and
    the engine's parent id is the external one plus `-{random suffix}`.
    """
    index, _, parent = engine_id.partition("_") if "_" in engine_id else ("0", "", engine_id)
    return parent.rsplit("-", 1)[0], int(index)
