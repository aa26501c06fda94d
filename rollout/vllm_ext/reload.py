"""Loading a sync's weights into the engine's model: by the proven direct map when there is one, else by vLLM's
own in-place reload plus the CPU expert repack it skips, learning (and proving) the direct map on the way."""

from __future__ import annotations

import logging
import warnings

import torch

from rollout.vllm_ext.direct_load import (
    DirectPlan,
    ExpertPlan,
    cpu_moe_layers,
    dense_plan,
    expert_plan,
    load_direct,
    proves,
    repack_moe,
)


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


def vllm_reload(vllm_config, model: torch.nn.Module, items: list[tuple[str, torch.Tensor]],
                plan: ExpertPlan | None = None) -> None:
    """vLLM's in-place (layer-wise) reload; with a plan, the experts are left out and vLLM's warnings about them
    muted."""
    import vllm.model_executor.model_loader.reload.inplace as inplace
    import vllm.model_executor.model_loader.reload.layerwise as layerwise

    quiet = _ExpectedMissing({type(m).__name__ for m, _ in plan.layers.values()} if plan else set())
    loggers = [logging.getLogger(inplace.__name__), logging.getLogger(layerwise.__name__)]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        inplace.reload_weights(vllm_config, model, iter(items), None, is_checkpoint_format=True)
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


class Loader:
    """One engine's way of loading synced weights, and what it has learned: the direct plan (None: not tried
    yet; False: none proves, so every load is vLLM's)."""

    def __init__(self, vllm_config, model: torch.nn.Module):
        self.vllm_config, self.model = vllm_config, model
        self.plan: DirectPlan | bool | None = None

    def load(self, items: list[tuple[str, torch.Tensor]]) -> str:
        """Loads `items`; returns the path taken: "direct" (every tensor by the map), "experts" (the experts by
        the map, the rest by vLLM's loader) or "reload" (vLLM's loader, plus the CPU expert repack)."""
        plan = self.plan
        if isinstance(plan, DirectPlan) and _covers(plan, items):
            if plan.dense is None:
                vllm_reload(self.vllm_config, self.model, [(n, t) for n, t in items if n not in plan.experts.slots],
                            plan.experts)
            load_direct(plan, dict(items))
            return "direct" if plan.dense is not None else "experts"
        vllm_reload(self.vllm_config, self.model, items)
        if next(self.model.parameters()).device.type != "cpu":
            return "reload"
        repack_moe(self.model)
        if plan is None:
            self.plan = self._proven_plan(items)
        return "reload"

    def _proven_plan(self, items: list[tuple[str, torch.Tensor]]) -> DirectPlan | bool:
        """Right after vLLM's own load of `items`: the widest plan that `direct_load.proves` (every tensor, else
        only the experts), or False. A plan that fails is dropped with a warning, and vLLM's own load of
        `items` is put back."""
        model = self.model
        moe = cpu_moe_layers(model)
        experts = expert_plan(model, [n for n, _ in items]) if moe else None
        if moe and experts is None:
            return False
        candidates = [DirectPlan(experts, None)] if experts else []
        if self.vllm_config.model_config.quantization is None:
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
            vllm_reload(self.vllm_config, model, items)  # put vLLM's own result back
            repack_moe(model)
        return False

    def kind(self) -> str | bool | None:
        """What the plan covers: "all", "experts", False (none proves) or None (not tried yet)."""
        plan = self.plan
        return plan if not isinstance(plan, DirectPlan) else "experts" if plan.dense is None else "all"


def _covers(plan: DirectPlan, items: list[tuple[str, torch.Tensor]]) -> bool:
    names = {n for n, _ in items}
    planned = set(plan.experts.slots if plan.experts else ()) | set(plan.dense.slots if plan.dense else ())
    return planned <= names if plan.dense is None else planned == names
