"""MoE router statistics and router freezing, on hand-worked counts and a real (random-init) tiny Qwen3-MoE."""

import math

import pytest
import torch

from rl.families import Routing, top_k_of
from rl.trainer.forward import Scoring
from rl.trainer.micro import MicroBatching
from rl.trainer.moe import freeze_router, router_counts, router_metrics, router_parameters, topk_agreement


def tiny_moe(seed: int = 0):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=32, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1)
    return Qwen3MoeForCausalLM(cfg)


def test_router_counts_take_top_k_of_unmasked_tokens():
    logits = torch.tensor([[3.0, 2.0, 0.0, -1.0], [0.0, 5.0, 4.0, 0.0], [9.0, 9.5, 0.0, 0.0]])
    counts, ent = router_counts((logits,), torch.tensor([True, True, False]), Routing(top_k=2), [None])
    assert counts.tolist() == [[1.0, 2.0, 1.0, 0.0]]  # token 0 -> {0, 1}, token 1 -> {1, 2}; token 2 masked
    p = torch.softmax(logits[:2], -1)
    assert ent.item() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)


def test_router_metrics_hand_worked():
    counts = torch.tensor([[1.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # layer 0 skewed, layer 1 balanced
    m = router_metrics(counts, torch.tensor([2.0, 4.0]), num_tokens=2)
    cv0 = math.sqrt(((0**2) + 1 + 0 + 1) / 4) / 1.0  # mean 1, population std sqrt(0.5)
    assert m["moe/layer0/expert_load_cv"] == pytest.approx(cv0)
    assert m["moe/layer1/expert_load_cv"] == 0.0
    assert m["moe/expert_load_cv"] == pytest.approx(cv0 / 2)
    assert m["moe/max_load_ratio"] == 2.0 and m["moe/layer1/max_load_ratio"] == 1.0
    assert m["moe/router_entropy"] == pytest.approx((1.0 + 2.0) / 2)
    assert m["moe/dead_experts"] == 1 and m["moe/layer0/dead_experts"] == 1


def test_freeze_router_stops_only_router_gradients():
    model = tiny_moe()
    names = [n for n, _ in router_parameters(model)]
    assert names == ["model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"]
    assert freeze_router(model) == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.randint(0, 32, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in names)
    assert not torch.equal(before["model.layers.0.mlp.experts.gate_up_proj"], after["model.layers.0.mlp.experts.gate_up_proj"])
    assert top_k_of(model.config) == 2


def test_topk_agreement_compares_sets_where_kept():
    own = torch.tensor([[0, 1], [2, 3], [1, 0]])
    theirs = torch.tensor([[1, 0], [2, 1], [3, 3]])
    assert topk_agreement(own, theirs) == (1, 3)  # {0,1}={0,1}; {2,3}!={1,2}; {0,1}!={3}
    assert topk_agreement(own, theirs, torch.tensor([True, False, False])) == (1, 1)


def test_freeze_router_on_a_dense_model_is_an_error():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dense = Qwen3ForCausalLM(Qwen3Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    with pytest.raises(ValueError, match="no router parameters"):
        freeze_router(dense)
    assert top_k_of(dense.config) is None


def test_routing_replay_of_own_routing_is_exact_and_forced_routing_changes_output():
    from rl.trainer.forward import token_logprobs
    from rl.trainer.moe import RoutingHooks, logprobs_and_routing

    model = tiny_moe()
    ids = torch.randint(0, 32, (3, 7))
    attn = torch.ones_like(ids)
    attn[2, 5:] = 0
    logps, experts = logprobs_and_routing(model, (ids, attn), Scoring(), MicroBatching(2).batches(attn.sum(1).tolist()))
    assert experts.shape == (3, 7, 2, 2) and int(experts.max()) < 4
    with RoutingHooks(model, (3, 7), experts, attn) as replay:
        again = token_logprobs(model, ids, attn).logps
    assert replay.agree == replay.total > 0
    keep = attn[:, 1:].bool()
    assert torch.allclose(again[keep], logps[keep], atol=1e-5)

    forced = torch.zeros_like(experts)
    forced[..., 1] = 3  # every token to experts {0, 3}
    with RoutingHooks(model, (3, 7), forced, attn) as replay:
        out = token_logprobs(model, ids, attn).logps
        out[keep].sum().backward()
    assert replay.agree < replay.total
    assert (out[keep] - logps[keep]).abs().max() > 1e-4
    # the gates are the router's softmax over the replayed experts, so the router still learns
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0


def test_old_logprobs_through_the_engines_routing_match_the_updates_replay():
    """R3 with TIS (moe.routing_replay=vllm, algo.old_logprobs=trainer): the old forward takes the engine's experts
    (here forced ones), returns them, and scores what a replayed forward of the update scores."""
    from rl.trainer.forward import token_logprobs
    from rl.trainer.moe import RoutingHooks, logprobs_and_routing

    model = tiny_moe()
    ids = torch.randint(0, 32, (3, 7))
    attn = torch.ones_like(ids)
    attn[1, 4:] = 0
    engine = torch.zeros(3, 7, 2, 2, dtype=torch.long)
    engine[..., 1] = 2  # every token to experts {0, 2}
    batches = MicroBatching(2).batches(attn.sum(1).tolist())
    own, _ = logprobs_and_routing(model, (ids, attn), Scoring(), batches)
    old, routing = logprobs_and_routing(model, (ids, attn), Scoring(), batches, replay=engine)
    keep = attn[:, 1:].bool()
    assert torch.equal(routing[attn.bool()], engine[attn.bool()])
    with RoutingHooks(model, (3, 7), engine, attn):
        update = token_logprobs(model, ids, attn).logps
    assert torch.allclose(old[keep], update[keep], atol=1e-5)
    assert (old[keep] - own[keep]).abs().max() > 1e-4  # the engine's experts, not the trainer's own


def test_routing_replay_vllm_goes_with_either_old_logprobs():
    from rl.config import load_config

    for old in ("sampler", "trainer"):
        cfg = load_config("configs/tiny.yaml", ["moe.routing_replay=vllm", f"algo.old_logprobs={old}", "algo.tis_cap=2"]
                          if old == "trainer" else ["moe.routing_replay=vllm"])
        assert (cfg.moe.routing_replay, cfg.algo.old_logprobs) == ("vllm", old)


def test_routing_replay_config_needs_trainer_old_logprobs():
    from rl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="routing_replay"):
        load_config("configs/tiny.yaml", ["moe.routing_replay=trainer"])
    cfg = load_config("configs/tiny.yaml", ["moe.routing_replay=trainer", "algo.old_logprobs=trainer"])
    assert cfg.moe.routing_replay == "trainer"


def test_routing_replay_true_means_the_engines_routing():
    from rl.config import load_config

    assert load_config("configs/tiny.yaml", ["moe.routing_replay=true"]).moe.routing_replay == "vllm"
    assert load_config("configs/tiny.yaml", ["moe.routing_replay=false"]).moe.routing_replay == "off"
