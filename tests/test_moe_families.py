"""Two more MoE families end to end: Mixtral (no shared expert) and Qwen2-MoE (a gated shared expert).

A tiny random-init model of each family (with the embedded tokenizer) trains for two real steps through the
full loop: Ray actor + vLLM engine, rewards, GRPO update, in-place sync. The per-step gap is the parity of
the engine's sampling logprobs (after the previous step's sync) against the trainer's on the same tokens.
"""

import json

import pytest
import torch

from rl.config import load_config
from rl.train import train

pytestmark = pytest.mark.engines

PARITY_TOL = 1e-3


def tiny_family_model(family: str, out, tokenizer_path="models/tiny-moe-base"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    common = dict(vocab_size=len(tok), hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                  tie_word_embeddings=False)
    if family == "mixtral":
        from transformers import MixtralConfig, MixtralForCausalLM

        model = MixtralForCausalLM(MixtralConfig(num_local_experts=4, num_experts_per_tok=2, head_dim=32, **common))
    else:
        from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                                   shared_expert_intermediate_size=64, decoder_sparse_step=1, **common))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_second_moe_family_trains_and_syncs(family, tmp_path):
    torch.manual_seed(0)
    path = tiny_family_model(family, tmp_path / family)
    cfg = load_config("configs/tiny.yaml", [
        f"model.path={path}", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=16",
        "trainer.steps=2", "trainer.lr=1e-3", "moe.aux_loss_coef=0.1", "run.eval_before=false", "run.eval_after=false",
        f"run.dir={tmp_path / 'run'}",
    ])
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["sync_max_abs_logprob_diff"] < PARITY_TOL
    assert all(m["rollout/logprob_abs_diff_max"] < PARITY_TOL for m in lines)
    # a random model earns no reward, so the aux loss is what moves the weights: every step syncs new weights,
    # and step 2's parity holds on an engine that received them
    assert all(m["grad_norm"] > 0 and m["moe/aux_loss"] > 0 for m in lines)
    assert lines[1]["moe/layer1/max_load_ratio"] >= 1.0 and "moe/router_entropy" in lines[1]
    # the engine's routing was captured for this family too, and matches the trainer's
    assert all(m["moe/routing_agreement"] > 0.99 for m in lines)
