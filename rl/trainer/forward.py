"""Per-token logprobs and entropy of a causal LM on given tokens: the trainer's side of every ratio."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from rl.trainer.chunked import EntropyMode, chunked_logprobs
from rl.trainer.packing import Packing, plan


@dataclass
class Forward:
    logps: torch.Tensor  # (B, L-1) logprob of input_ids[:, 1:] at the scored positions, 0 elsewhere
    entropy: torch.Tensor | None = None  # (B, L-1) entropy of each scored next-token distribution, 0 elsewhere
    router_logits: tuple[torch.Tensor, ...] | None = None  # per MoE layer, (B * L, E)
    aux_loss: torch.Tensor | None = None  # the model's load-balancing loss (unweighted)


@dataclass(frozen=True)
class Scoring:
    """How a forward scores its targets."""

    temperature: float = 1.0  # the sampling temperature: logits are divided by it, as the engine's were
    pack: bool = False  # lay the right-padded rows end to end first (rl/trainer/packing.py)
    chunk_tokens: int = 0  # > 0: the chunked head, that many tokens' logits at a time (rl/trainer/chunked.py); 0: all
    entropy: EntropyMode = "none"  # none; value (detached); grad (an entropy term in the loss)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, scoring: Scoring | None = None,
                   with_router: bool = False, score_mask: torch.Tensor | None = None) -> Forward:
    """One forward pass, scored as `scoring` says; the outputs keep the padded layout. `with_router` also returns
    the MoE router logits and aux loss. `score_mask` (B, L-1): the targets to score (default: every token).
    """
    sc = scoring or Scoring()
    target = attention_mask[:, 1:].bool()  # column t scores token t + 1
    if score_mask is not None:
        target = target & score_mask.bool()
    packing = plan(attention_mask) if sc.pack else None
    aux_fn = _aux_loss_fn(model) if packing is not None and with_router else None
    if with_router and aux_fn is None:
        packing = None  # the aux loss of a packed forward needs the family's function to leave padding out
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask} if packing is None else \
        {"input_ids": packing.pack(input_ids), "position_ids": packing.position_ids}
    head = _HiddenStates(model) if sc.chunk_tokens else None
    with head or nullcontext():
        out = model(**inputs, use_cache=False, **({"output_router_logits": True} if with_router else {}))
    if head is not None:
        logps, ent = _chunked(head, input_ids, target, packing, sc)
    else:
        logps, ent = _materialized(out.logits, inputs["input_ids"], target, packing, sc)
    if not with_router:
        return Forward(logps, ent)
    if packing is None:
        return Forward(logps, ent, out.router_logits, getattr(out, "aux_loss", None))
    b, scores = input_ids.shape[0], (packing.rows, packing.width)
    router = tuple(packing.unpack(x.view(*scores, -1), b).reshape(-1, x.shape[-1]) for x in out.router_logits)
    aux = aux_fn(router, model.num_experts, model.num_experts_per_tok, attention_mask)  # padding left out, as unpacked
    return Forward(logps, ent, router, aux)


class _HiddenStates:
    """While active, the model's output layer hands over its input (the final hidden states) and the weight it
    would use, and computes logits for no position: the chunked head computes them instead. Under FSDP the
    weight is the one the forward gathered, so it is gathered once per micro-batch, not once per chunk."""

    def __init__(self, model):
        self.head = model.get_output_embeddings()
        if getattr(self.head, "bias", None) is not None:
            raise ValueError(f"{type(model).__name__}'s output layer has a bias; the chunked head takes none "
                             "(set trainer.logprob_chunk_tokens=0)")
        c = model.config
        if getattr(c, "final_logit_softcapping", None) or getattr(c, "logit_scale", None) not in (None, 1, 1.0):
            raise ValueError(f"{type(model).__name__} transforms its logits after the output layer; the chunked head "
                             "computes plain logits (set trainer.logprob_chunk_tokens=0)")
        self.hidden = self.weight = None

    def _grab(self, module, args):
        self.hidden, self.weight = args[0], module.weight
        return (args[0][..., :0, :],)  # (b, 0, H): no position's logits

    def __enter__(self):
        self.handle = self.head.register_forward_pre_hook(self._grab)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _chunked(head: _HiddenStates, input_ids: torch.Tensor, target: torch.Tensor, packing: Packing | None,
             sc: Scoring) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, L-1) logprobs and entropy of the scored targets from the grabbed hidden states, `chunk` tokens at a time."""
    b, w = input_ids.shape
    hidden = head.hidden.reshape(-1, head.hidden.shape[-1])  # (b * w, H), or (R * C, H) packed
    flat = torch.arange(b * w, device=input_ids.device).view(b, w) if packing is None else packing.slot.view(b, w)
    rows = flat[:, :-1][target]  # (N,) the hidden state that predicts each scored target
    logps, ent = chunked_logprobs(hidden.index_select(0, rows), head.weight, input_ids[:, 1:][target], sc.temperature,
                                  sc.chunk_tokens, sc.entropy)
    place = torch.zeros(b, w - 1, dtype=logps.dtype, device=logps.device)
    return place.masked_scatter(target, logps), None if ent is None else place.masked_scatter(target, ent)


def _materialized(logits: torch.Tensor, ids: torch.Tensor, target: torch.Tensor, packing: Packing | None,
                  sc: Scoring) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, L-1) logprobs and entropy from the whole logits (B, L, V), or packed (R, C, V): the oracle of `_chunked`."""
    logp_all = torch.log_softmax(logits[:, :-1].float() / sc.temperature, dim=-1)  # (b, w-1, V)
    logps = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    ent = None
    if sc.entropy != "none":
        with torch.set_grad_enabled(sc.entropy == "grad" and torch.is_grad_enabled()):
            ent = -(logp_all.exp() * logp_all).sum(-1)
    if packing is not None:  # per-slot results (R, C-1), padded to (R, C) and laid back out
        b = target.shape[0]
        logps, ent = (None if x is None else packing.unpack(torch.nn.functional.pad(x, (0, 1)), b)[:, :-1]
                      for x in (logps, ent))
    return torch.where(target, logps, 0.0), None if ent is None else torch.where(target, ent, 0.0)


def _aux_loss_fn(model):
    """The model family's `load_balancing_loss_func` (transformers' MoE families each define one), or None."""
    from rl.trainer.lora import unwrapped

    model = unwrapped(model)  # under LoRA, the family's class is inside peft's
    if not hasattr(model, "num_experts_per_tok"):
        return None
    for cls in type(model).__mro__:  # FSDP wraps the class in a subclass of its own
        fn = getattr(sys.modules.get(cls.__module__), "load_balancing_loss_func", None)
        if fn is not None:
            return fn
    return None


def run_micro_batches(model, micro_batches: list[list[int]], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      score_mask: torch.Tensor | None, passes: int, forward) -> None:
    """Calls `forward(rows, ids, mask, score)` for each micro-batch (row indices), on the model's device and trimmed
    to its longest row; then as many empty forwards as make `passes` (FSDP: every rank gathers as often)."""
    device = next(model.parameters()).device
    for rows in micro_batches:
        index = torch.tensor(rows)
        width = int(attention_mask[index].sum(1).max())
        score = None if score_mask is None else score_mask[index, : width - 1].to(device)
        forward(index, input_ids[index, :width].to(device), attention_mask[index, :width].to(device), score)
    for _ in range(passes - len(micro_batches)):
        model(input_ids=input_ids[:1, :2].to(device), use_cache=False)


@torch.no_grad()
def batched_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, scoring: Scoring,
                     micro_batches: list[list[int]], score_mask: torch.Tensor | None = None, passes: int = 0) -> torch.Tensor:
    """token_logprobs without gradients over `micro_batches` (row indices, rl.trainer.micro) on the model's device;
    (B, L-1) on the CPU, 0 at unscored targets."""
    out = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)

    def forward(rows, ids, mask, score):
        out[rows, : ids.shape[1] - 1] = token_logprobs(model, ids, mask, scoring, score_mask=score).logps.float().cpu()

    run_micro_batches(model, micro_batches, input_ids, attention_mask, score_mask, passes, forward)
    return out
