"""Logprobs and entropy of target tokens straight from the final hidden states, a chunk of tokens at a time.

The materialized head keeps (tokens x vocabulary) logits, their fp32 log-softmax and its gradient: about 16 bytes
per token per vocabulary entry, 2.3 GiB per 1,000 tokens at Qwen's 151,936 entries. Here the forward computes one
chunk's logits at a time, keeps only each token's fp32 log-normaliser (and entropy), and the backward recomputes
each chunk's logits to form its gradient: memory is one chunk of logits, whatever the length, for one more matmul
of the head (the recompute).

With z = logits / T, log p = z - lse(z), H = lse(z) - sum_v p_v z_v:
  d log p_y / dz = onehot(y) - p,    dH / dz = -p * (log p + H),    d / dlogits = (d / dz) / T.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

EntropyMode = Literal["none", "value", "grad"]  # not computed; computed, detached; computed with its gradient


def chunked_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0, chunk: int = 1024,
                     entropy: EntropyMode = "none") -> tuple[Tensor, Tensor | None]:
    """log softmax(hidden @ weight.T / temperature)[targets] and, unless `entropy` is none, the entropy of each
    distribution; both (N,) fp32.

    hidden: (N, H) final hidden states of the scored positions (any float dtype: the matmuls run in it);
    weight: (V, H) the output embedding (a tied embedding receives this gradient beside the input's);
    targets: (N,) long, the token each position predicts. Logits exist one chunk of `chunk` tokens at a time.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 token, got {chunk}")
    logps, ent = _ChunkedLogprobs.apply(hidden, weight, targets, float(temperature), int(chunk), entropy)
    return logps, (None if entropy == "none" else ent)


class _ChunkedLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk, entropy):
        n = hidden.shape[0]
        w = weight.to(hidden.dtype)  # under autocast the fp32 master weight is cast once per call, not per chunk
        lse = torch.empty(n, dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)  # (N,) log-normaliser of z
        logps = torch.empty_like(lse)
        ent = torch.empty_like(lse) if entropy != "none" else lse.new_empty(0)
        for s in range(0, n, chunk):
            z = _scaled_logits(hidden[s : s + chunk], w, temperature)  # (c, V) fp32
            lse[s : s + chunk] = torch.logsumexp(z, dim=-1)
            logps[s : s + chunk] = z.gather(-1, targets[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
            if entropy != "none":  # H = lse - sum_v p_v z_v
                ent[s : s + chunk] = lse[s : s + chunk] - _expected(z, lse[s : s + chunk])
        ctx.save_for_backward(hidden, weight, targets, lse, ent if entropy == "grad" else lse.new_empty(0))
        ctx.temperature, ctx.chunk, ctx.entropy = temperature, chunk, entropy
        if entropy != "grad":
            ctx.mark_non_differentiable(ent)
        return logps, ent

    @staticmethod
    def backward(ctx, grad_logps, grad_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        with_entropy = ctx.entropy == "grad" and grad_ent is not None
        w = weight.to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            z = _scaled_logits(h, w, T)  # (c, V) fp32, recomputed
            g = _grad_logits(z, lse[s : s + chunk], targets[s : s + chunk], grad_logps[s : s + chunk],
                             ent[s : s + chunk] if with_entropy else None,
                             grad_ent[s : s + chunk] if with_entropy else None, T)  # (c, V) fp32
            g_low = g.to(w.dtype)  # the matmuls' dtype (g itself in fp32)
            if grad_hidden is not None:
                grad_hidden[s : s + chunk] = g_low @ w  # (c, H)
            if grad_weight is not None:
                grad_weight += _weight_grad(g, g_low, h)  # (V, H), summed over chunks in fp32
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def _scaled_logits(h: Tensor, w: Tensor, temperature: float) -> Tensor:
    """z = h @ w.T / T in fp32 (or wider); (c, V)."""
    z = h @ w.T
    z = z if z.dtype in (torch.float32, torch.float64) else z.float()
    return z.div_(temperature) if temperature != 1.0 else z


def _expected(z: Tensor, lse: Tensor) -> Tensor:
    """sum_v p_v z_v per row, with p = exp(z - lse); (c,). One (c, V) temporary."""
    p = torch.sub(z, lse[:, None]).exp_()
    return torch.einsum("cv,cv->c", p, z)


def _grad_logits(z: Tensor, lse: Tensor, targets: Tensor, g_logp: Tensor, ent: Tensor | None, g_ent: Tensor | None,
                 temperature: float) -> Tensor:
    """dL/dlogits of one chunk, in place over z: (g_logp (onehot - p) - g_ent p (log p + H)) / T; (c, V) fp32."""
    logp = z.sub_(lse[:, None])  # (c, V) log p, z no longer needed
    if ent is not None:  # -g_ent * p * (log p + H)
        p = logp.exp()
        coef = logp.add_(ent[:, None]).mul_(p).mul_(-g_ent[:, None])  # logp's buffer now holds the entropy term
        grad = coef.sub_(p.mul_(g_logp[:, None]))
    else:
        grad = logp.exp_().mul_(-g_logp[:, None])  # -g_logp * p
    grad.scatter_add_(-1, targets[:, None], g_logp[:, None])  # + g_logp * onehot(y)
    return grad.div_(temperature) if temperature != 1.0 else grad


def _weight_grad(g: Tensor, g_low: Tensor, h: Tensor) -> Tensor:
    """g.T @ h in fp32 without rounding the product to bf16 first (a rounded product per chunk, summed, biases the
    weight's gradient): CUDA's fp32-output matmul keeps bf16 inputs fast; elsewhere the fp32 g meets h widened."""
    if h.dtype in (torch.float32, torch.float64):
        return g.T @ h
    if h.is_cuda:
        try:
            return torch.mm(g_low.T, h, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            pass
    return g.T @ h.float()
