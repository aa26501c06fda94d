"""purerl's named RPCs on vLLM's worker (vLLM's `worker_extension_cls`): routing capture, diagnostics, and what
the `purerl` backend reports. vLLM mixes this class into its worker and never runs its `__init__`, so the
state lives on one object made on first use."""

from __future__ import annotations

from rollout.vllm_ext.routing import RoutingCapture


class ExtensionState:
    def __init__(self):
        self.routing: RoutingCapture | None = None


class PurerlWorkerExtension:
    def purerl_state(self) -> ExtensionState:
        state = getattr(self, "purerl_extension_state", None)
        if state is None:
            state = self.purerl_extension_state = ExtensionState()
        return state

    def purerl_install_capture(self, top_k: int) -> int:
        """Hooks the model's routers; returns the number of MoE layers hooked (0: none, nothing installed)."""
        capture = RoutingCapture(self, top_k)
        if capture.num_layers == 0:
            capture.remove()
            return 0
        self.purerl_state().routing = capture
        return capture.num_layers

    def purerl_take_routing(self) -> dict:
        """The routing captured since the last call, keyed by vLLM's (child) request id."""
        capture = self.purerl_state().routing
        return {} if capture is None else capture.take()

    def purerl_transfer_report(self) -> dict:
        """The `purerl` backend's lifecycle call counts, its direct plan and its last sync (empty for another
        backend)."""
        engine = self.weight_transfer_engine
        if not hasattr(engine, "loader"):
            return {}
        return {"calls": dict(engine.calls), "plan": engine.loader.kind(), "last": dict(engine.last)}

    def purerl_abort_weight_update(self) -> None:
        """After a failed `finish_weight_update`: vLLM's worker still counts the update as active (it clears the
        flag only when `update_weights` fails), so the next sync could not start. The engine keeps the weights
        it held before."""
        self._weight_update_active = False
        getattr(self.weight_transfer_engine, "staged", []).clear()

    def purerl_call(self, fn, *args):
        """`fn(worker, *args)` inside the engine, for tests and diagnostics."""
        return fn(self, *args)
