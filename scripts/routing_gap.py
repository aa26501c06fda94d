"""Does replaying the engine's routing close the trainer/vLLM gap? Same weights, same sampled tokens.

Samples with a vLLM engine (routing captured), then scores the same tokens with the trainer twice: with its
own routing, and replaying the engine's. Prints routing agreement and the logprob gap for both.
`python scripts/routing_gap.py --dtype bfloat16` (also `make routing-gap`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="models/tiny-moe-base")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from rl.batch.build import build_tokens
    from rl.data import apply_template, load_prompts
    from rl.families import routing_of
    from rl.objectives.mismatch import mismatch_metrics
    from rl.trainer.forward import token_logprobs
    from rl.trainer.moe import RoutingHooks, router_biases, sampler_agreement
    from rl.trainer.policy import load_policy, load_tokenizer
    from rollout.engine import create_engine, generate_groups, install_capture, sampling_params
    from rollout.types import EngineSpec, Sampling

    tok = load_tokenizer(args.model)
    policy = load_policy(args.model, args.dtype, trainable=False)
    routing = routing_of(policy.config)
    rows = load_prompts("rl/tasks/arithmetic/data/heldout.jsonl")[: args.prompts]
    ids = [tok(apply_template(r.question, "r1_zero"))["input_ids"] for r in rows]
    llm = create_engine(EngineSpec(args.model, dtype=args.dtype, max_model_len=max(map(len, ids)) + args.max_new_tokens))
    install_capture(llm, routing.top_k)
    groups = generate_groups(llm, ids, list(range(len(ids))), sampling_params(Sampling(args.n, 1.0, 1.0, args.max_new_tokens,
                                                                                     ("</answer>",))),
                             capture_routing=True)
    P, G = len(groups), args.n
    batch = build_tokens(groups, tok.pad_token_id)  # every sample's response tokens are compared
    positions = torch.nn.functional.pad(batch.response_mask, (0, 1))  # inputs whose outputs score response tokens
    shape = tuple(batch.input_ids.shape)
    result = {"dtype": args.dtype, "samples": P * G, "response_tokens": int(batch.response_mask.sum())}
    with torch.no_grad():
        fwd = token_logprobs(policy, batch.input_ids, batch.attention_mask, with_router=True)
        agree, total = sampler_agreement(fwd.router_logits, batch.sampler_experts, positions, routing,
                                         router_biases(policy))
        result["without_replay"] = {"routing_agreement": agree / total,
                                    **mismatch_metrics(fwd.logps.float(), batch.sampler_logps, batch.response_mask)}
        # replay, then record what the experts actually received (a hook registered after the replay's)
        with RoutingHooks(policy, shape, batch.sampler_experts, positions), RoutingHooks(policy, shape) as used:
            replayed = token_logprobs(policy, batch.input_ids, batch.attention_mask).logps
        same = (used.experts().sort(-1).values == batch.sampler_experts.sort(-1).values).all(-1)  # (B, L, layers)
        result["with_replay"] = {"routing_agreement": float(same[positions].float().mean()),
                                 **mismatch_metrics(replayed.float(), batch.sampler_logps, batch.response_mask)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
