"""DeepSeek-V3's router in the trainer, without an engine: group-limited choice with the correction bias, sigmoid
gates under routing replay, and the auxiliary-loss-free bias update (hand-worked and against transformers)."""

import pytest
import torch

from rl.families import Routing, bias_step, routing_of
from rl.trainer.forward import Scoring
from rl.trainer.micro import MicroBatching
from rl.trainer.moe import (
    RoutingHooks,
    bias_metrics,
    expert_counts,
    logprobs_and_routing,
    router_biases,
    router_counts,
    update_router_bias_,
)


def tiny_dsv3(seed: int = 0, scale: float = 2.5):
    """A random DeepSeek-V3 small enough for unit tests: 8 experts in 4 groups (top-3 from the best 2), a first
    dense layer, a random correction bias large enough to change choices, routed_scaling_factor `scale`."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    cfg = DeepseekV3Config(
        vocab_size=32, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4,
        topk_group=2, first_k_dense_replace=1, routed_scaling_factor=scale, norm_topk_prob=True,
        max_position_embeddings=64)
    model = DeepseekV3ForCausalLM(cfg)
    for layer in model.model.layers[1:]:
        layer.mlp.gate.weight.data.normal_(0, 0.5)
        layer.mlp.gate.e_score_correction_bias.copy_(torch.randn(8) * 0.2)
    return model


def test_routing_of_reads_each_family():
    from transformers import MixtralConfig, Qwen3MoeConfig

    ds = routing_of(tiny_dsv3().config)
    assert ds == Routing(top_k=3, scoring="sigmoid", groups=4, topk_groups=2, normalize=True, scale=2.5)
    qwen = routing_of(Qwen3MoeConfig(num_experts_per_tok=2, norm_topk_prob=False))
    assert qwen == Routing(top_k=2, scoring="softmax", groups=1, topk_groups=1, normalize=False, scale=1.0)
    assert routing_of(MixtralConfig(num_experts_per_tok=2)).normalize  # Mixtral always renormalises


def test_grouped_choice_and_gates_equal_the_deepseek_router():
    model = tiny_dsv3()
    gate = model.model.layers[1].mlp.gate
    x = torch.randn(64, 32)
    logits, weights, indices = gate(x)
    routing = routing_of(model.config)
    chosen = routing.choose(logits, gate.e_score_correction_bias)
    assert torch.equal(chosen.sort(-1).values, indices.sort(-1).values)
    assert torch.allclose(routing.gates(logits, indices), weights, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.full((64,), 2.5))  # normalised, then scaled
    # the bias decides: without it the choice differs for some tokens, with it every token agrees
    assert not torch.equal(routing.choose(logits).sort(-1).values, indices.sort(-1).values)


def test_group_limit_hand_worked():
    # 4 experts in 2 groups, top-1 group, top-2 experts. Sigmoid scores s = sigmoid(logits).
    logits = torch.tensor([[2.0, -3.0, 1.0, 1.0]])  # group scores: 0.88+0.05=0.93 vs 0.73+0.73=1.46 -> group 1
    r = Routing(top_k=2, scoring="sigmoid", groups=2, topk_groups=1)
    assert sorted(r.choose(logits, torch.zeros(4)).tolist()[0]) == [2, 3]  # expert 0 is best but its group loses
    assert sorted(r.choose(logits, torch.tensor([0.0, 2.0, 0.0, 0.0])).tolist()[0]) == [0, 1]  # bias flips the group
    g = r.gates(logits, torch.tensor([[0, 1]]))
    s = torch.sigmoid(torch.tensor([2.0, -3.0]))
    assert torch.allclose(g, (s / s.sum()).unsqueeze(0))  # the bias never enters a gate


def test_replay_of_own_routing_is_exact_with_sigmoid_gates():
    model = tiny_dsv3()
    ids = torch.randint(0, 32, (3, 7))
    attn = torch.ones_like(ids)
    attn[2, 5:] = 0
    logps, experts = logprobs_and_routing(model, (ids, attn), Scoring(), MicroBatching(2).batches(attn.sum(1).tolist()))
    assert experts.shape == (3, 7, 2, 3)  # the dense first layer has no router
    from rl.trainer.forward import token_logprobs

    with RoutingHooks(model, (3, 7), experts, attn) as replay:
        again = token_logprobs(model, ids, attn).logps
        again[attn[:, 1:].bool()].sum().backward()
    assert replay.agree == replay.total > 0
    keep = attn[:, 1:].bool()
    assert torch.allclose(again[keep], logps[keep], atol=1e-5)  # gates: sigmoid, normalised, x 2.5
    assert model.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0  # the router still learns under replay


def test_router_counts_use_the_biased_grouped_choice():
    model = tiny_dsv3()
    ids = torch.randint(0, 32, (2, 6))
    attn = torch.ones_like(ids)
    _, experts = logprobs_and_routing(model, (ids, attn), Scoring(), MicroBatching(2).batches(attn.sum(1).tolist()))
    out = model(input_ids=ids, attention_mask=attn, output_router_logits=True)
    counts, _ = router_counts(out.router_logits, attn, routing_of(model.config), router_biases(model))
    assert torch.equal(counts, expert_counts(experts, attn, 8))  # what the routers chose, token for token
    assert counts.sum().item() == 2 * 12 * 3


def test_bias_step_hand_worked():
    load = torch.tensor([[4.0, 2.0, 2.0, 0.0], [1.0, 1.0, 3.0, 3.0]])  # means 2 and 2
    out = bias_step(torch.zeros(2, 4), load, 0.1)
    assert torch.allclose(out, torch.tensor([[-0.1, 0.0, 0.0, 0.1], [0.1, 0.1, -0.1, -0.1]]))


def test_update_router_bias_moves_every_layer_and_reports_it():
    model = tiny_dsv3()
    for b in router_biases(model):
        b.zero_()
    load = torch.tensor([[5.0, 1, 1, 1, 1, 1, 1, 1], [1.0, 1, 1, 1, 1, 1, 1, 9]])
    update_router_bias_(model, load, 0.01)
    b1, b2 = router_biases(model)
    assert b1[0].item() == pytest.approx(-0.01) and b1[1].item() == pytest.approx(0.01)
    assert b2[7].item() == pytest.approx(-0.01) and b2[0].item() == pytest.approx(0.01)
    assert bias_metrics(model)["moe/bias_abs_mean"] == pytest.approx(0.01)
    assert not any(n.endswith("e_score_correction_bias") for n, _ in model.named_parameters())  # no gradient
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in model.state_dict()  # so it syncs


def test_bias_update_needs_a_router_with_a_bias():
    from rl.config import ConfigError, load_config
    from tests.test_moe import tiny_moe

    with pytest.raises(ValueError, match="no e_score_correction_bias"):
        update_router_bias_(tiny_moe(), torch.ones(2, 4), 0.1)
    with pytest.raises(ConfigError, match="bias_update_rate"):
        load_config("configs/tiny.yaml", ["moe.bias_update_rate=-1"])
