"""LoRA on the policy through peft: adapters on the targeted modules (and an MoE's fused experts), the frozen
base as the KL reference, and the two things a sync can send: the adapter's tensors, or the weights with the
adapter merged in (W + BA), in checkpoint names.

The routers are never adapted: the routing stays the base model's, so routing replay and the router statistics
mean what they meant without LoRA.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch

from rl.errors import UserError
from rl.families import is_router

EXPERTS = "experts"
"""The target name for an MoE's fused expert weights (peft's `target_parameters`)."""
EXPERT_PARAMETERS = ("gate_up_proj", "down_proj")  # transformers 5's fused experts, in every MoE family it has
ADAPTER = "default"


class LoraTargetError(UserError):
    """model.lora.target_modules names nothing the policy has, or something peft cannot adapt."""


def lora_config(model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]):
    """peft's LoraConfig for this model: `targets` are module names (or `all-linear`), and `experts` for the fused
    expert weights; routers are left out. A name that matches nothing is an error naming what exists."""
    from peft import LoraConfig

    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    head = {n for n, m in model.named_modules() if m is model.get_output_embeddings()}
    routers = {n for n in linear if is_router(n) or n.endswith("shared_expert_gate")}
    leaves = sorted({n.rsplit(".", 1)[-1] for n in linear - head - routers})
    modules = [t for t in targets if t != EXPERTS]
    unknown = [t for t in modules if t != "all-linear" and t not in leaves]
    if unknown:
        raise LoraTargetError(f"model.lora.target_modules: {unknown} match no linear layer of the policy; it has "
                              f"{leaves}" + (f" and `{EXPERTS}` (its fused expert weights)" if expert_names(model) else ""))
    experts = expert_names(model) if EXPERTS in targets else []
    if EXPERTS in targets and not experts:
        raise LoraTargetError(f"model.lora.target_modules: `{EXPERTS}`: the policy has no fused expert weights "
                              f"({type(model).__name__}); its linear layers: {leaves}")
    if "all-linear" in modules:
        modules = leaves
    chosen = sorted(n for n in linear - head - routers if n.rsplit(".", 1)[-1] in modules)
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen or None,
                      target_parameters=experts or None, bias="none", task_type="CAUSAL_LM")


def expert_names(model: torch.nn.Module) -> list[str]:
    """The fused expert parameters of every MoE layer (`model.layers.0.mlp.experts.gate_up_proj`, ...)."""
    return [f"{n}.{p}" for n, m in model.named_modules() if n.endswith(f".{EXPERTS}")
            for p in EXPERT_PARAMETERS if isinstance(getattr(m, p, None), torch.nn.Parameter)]


def wrap(model: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: list[str],
         adapter: str | None = None):
    """The policy with adapters (peft's PeftModel; only the adapters train), fresh or loaded from `adapter`, a
    folder in peft's format."""
    from peft import PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    return get_peft_model(model, lora_config(model, rank, alpha, dropout, targets))


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PeftModel (its class carries the family's functions), else the model."""
    return model.get_base_model() if is_lora(model) else model


@contextmanager
def reference(model: torch.nn.Module):
    """The frozen reference: the same model with its adapters off, so no second copy is loaded."""
    with model.disable_adapter():
        yield


_BASE_LAYER = re.compile(r"\.base_layer(?=\.|$)")


def _plain(name: str) -> str:
    """A parameter's name without peft's wrapping (`q_proj.base_layer.weight` -> `q_proj.weight`)."""
    return _BASE_LAYER.sub("", name)


def holds_adapter(path: str) -> bool:
    """True for a folder holding an adapter in peft's format (a LoRA run's resumable checkpoint)."""
    return (Path(path) / "adapter_config.json").is_file()


@torch.no_grad()
def merged_state(model, sharded: bool = False) -> dict[str, torch.Tensor] | None:
    """The policy's weights with every adapter merged in (W + scaling * B A, by peft's own `get_delta_weight`),
    under the base model's names; the base weights themselves are left untouched. Sharded (FSDP2): every rank must
    call; the deltas are computed while the units are gathered, the weights come whole to rank 0 (None elsewhere)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    with _gathered(model, sharded):
        deltas = {_plain(f"{n}.{getattr(m, 'parameter_name', None) or 'weight'}"): m.get_delta_weight(ADAPTER).cpu()
                  for n, m in base.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}
    if sharded:
        from rl.trainer.dist import full_state

        whole = full_state(model)
        if whole is None:
            return None
        state = {k.removeprefix(PEFT_PREFIX): v for k, v in whole.items()}
    else:
        state = base.state_dict()
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        plain = _plain(name)
        out[plain] = tensor + deltas[plain].to(tensor.device) if plain in deltas else tensor
    return out


PEFT_PREFIX = "base_model.model."  # a PeftModel's state-dict names: this, then the base model's


@contextmanager
def _gathered(model, sharded: bool):
    """Under FSDP2, every unit's parameters gathered for the block (a collective), resharded after it."""
    if not sharded:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for u in units:
        u.unshard()
    try:
        yield
    finally:
        for u in units:
            u.reshard()


def adapter_state(model, sharded: bool = False) -> dict[str, torch.Tensor] | None:
    """The adapter's tensors in peft's saved format (what `adapter_model.safetensors` holds). Sharded: every rank
    must call; rank 0 gets them (None elsewhere)."""
    from peft import get_peft_model_state_dict

    whole = None
    if sharded:
        from rl.trainer.dist import full_state

        whole = full_state(model)
        if whole is None:
            return None
    return {k: v.detach() for k, v in get_peft_model_state_dict(model, state_dict=whole).items()}


def save(model, folder: Path, merged: bool, write: bool, sharded: bool = False) -> None:
    """The adapter in peft's format into `folder` (a resumable checkpoint), or `merged`: the weights with the adapter
    merged in as a Hugging Face folder vLLM and transformers load as is, and the adapter in `folder/adapter`.
    Only where `write` (rank 0) are files written; under FSDP every rank must call."""
    adapter = adapter_state(model, sharded)
    weights = merged_state(model, sharded) if merged else None
    if not write:
        return
    folder = Path(folder)
    if merged:
        unwrapped(model).save_pretrained(folder, safe_serialization=True, state_dict=weights)
        folder = folder / "adapter"
    model.save_pretrained(folder, safe_serialization=True, state_dict=_full_names(adapter))


def _full_names(adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft's saved names back to the PeftModel's own (`...lora_A.weight` -> `...lora_A.default.weight`), the
    state dict `PeftModel.save_pretrained` takes and saves the adapter of."""
    return {re.sub(r"\.(lora_[AB])\.", rf".\1.{ADAPTER}.", k): v for k, v in adapter.items()}


def adapter_config(model) -> dict:
    """The adapter's peft config as adapter_config.json holds it (what vLLM's LoRA reads with the tensors)."""
    out = model.peft_config[ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in out.items()}


def sync_bytes(model, adapter_only: bool) -> int:
    """Bytes of one sync's tensors: the adapter's (adapter sync), else every weight but the adapter's (merged, or
    a model without adapters). From the state dict's global sizes, so no gathering under FSDP."""
    adapted = is_lora(model)
    return sum(t.numel() * t.element_size() for k, t in model.state_dict().items()
               if adapted and (".lora_" in k) == adapter_only or not adapted)
