"""The trainer on a GPU, for the lent accelerator (torch and CUDA, no vLLM or Ray; carry a transformers tree):
`python scripts/gpu_trainer_check.py [--out DIR]`.

A random Qwen3-MoE of about 1 B parameters (32 experts, top-4) in bf16 mixed precision: one trainer step
(purerl's forward with its experts path, a policy-gradient loss, backward, AdamW) timed over micro-batches;
tokens/s and MFU against a bf16 matmul peak measured in the same run; and the trainer's logprobs on the GPU (bf16
autocast, and fp32) against fp32 on the CPU for the same weights and tokens. Prints and writes gpu_check.json.
Only torch, transformers and rl/trainer's own modules are imported (no omegaconf, Ray or vLLM).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def matmul_peak(dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def model(seed: int = 0):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from rl.trainer.experts import register

    register()
    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
                         num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4, head_dim=64, num_experts=32,
                         num_experts_per_tok=4, decoder_sparse_step=1, norm_topk_prob=True, tie_word_embeddings=False)
    cfg._experts_implementation = "purerl"
    return Qwen3MoeForCausalLM(cfg)


def active_params(m) -> int:
    c = m.config
    expert = 3 * c.hidden_size * c.moe_intermediate_size
    total = sum(p.numel() for p in m.parameters())
    return total - c.num_hidden_layers * (c.num_experts - c.num_experts_per_tok) * expert


def train_step(m, batch: int, length: int, micro: int) -> tuple[float, int]:
    """One optimizer step over `batch` rows of `length` tokens in micro-batches of `micro`, bf16 autocast."""
    from rl.trainer.forward import token_logprobs

    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    ids = torch.randint(0, m.config.vocab_size, (batch, length), device="cuda")
    adv = torch.randn(batch, device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for s in range(0, batch, micro):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logps = token_logprobs(m, ids[s : s + micro], torch.ones_like(ids[s : s + micro])).logps
        (-(adv[s : s + micro, None] * logps).mean() * micro / batch).backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t, batch * length


def logprob_agreement(length: int = 256) -> dict[str, float]:
    """max and mean |logprob difference| on the same weights and tokens: GPU bf16 autocast and GPU fp32 against
    CPU fp32."""
    from rl.trainer.forward import token_logprobs

    m = model(seed=1).eval()
    ids = torch.randint(0, m.config.vocab_size, (4, length))
    with torch.no_grad():
        cpu = token_logprobs(m, ids, torch.ones_like(ids)).logps
        m.cuda()
        gpu32 = token_logprobs(m, ids.cuda(), torch.ones_like(ids).cuda()).logps.float().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu16 = token_logprobs(m, ids.cuda(), torch.ones_like(ids).cuda()).logps.float().cpu()
    return {"fp32_max": float((gpu32 - cpu).abs().max()), "fp32_mean": float((gpu32 - cpu).abs().mean()),
            "bf16_max": float((gpu16 - cpu).abs().max()), "bf16_mean": float((gpu16 - cpu).abs().mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--micro", type=int, default=4)
    args = p.parse_args()
    peak = matmul_peak(torch.bfloat16)
    m = model().cuda()
    train_step(m, args.micro, args.length, args.micro)  # warm-up: kernels, allocator
    seconds, tokens = train_step(m, args.batch, args.length, args.micro)
    flops = 6 * active_params(m) * tokens  # forward + backward, per active parameter and token
    result = {"device": torch.cuda.get_device_name(0), "params": sum(q.numel() for q in m.parameters()),
              "active_params": active_params(m), "tokens": tokens, "step_s": seconds, "tokens_per_s": tokens / seconds,
              "bf16_matmul_peak_tflops": peak / 1e12, "mfu": flops / seconds / peak,
              "max_memory_gib": torch.cuda.max_memory_allocated() / (1 << 30), "logprobs_vs_cpu_fp32": logprob_agreement()}
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
