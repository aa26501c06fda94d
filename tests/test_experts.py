"""rl/trainer/experts.py: the trainer's MoE experts give transformers' values and gradients, through either matmul path."""

import pytest
import torch

from rl.config import load_config
from rl.trainer.experts import _Rows, experts_forward, register


def test_rows_backward_gathers_and_sums_the_repeats_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    # pairs (token, slot): 0 -> (0,0), 1 -> (0,1), 2 -> (1,0), 3 -> (1,1); sorted order visits pairs 3, 0, 2, 1
    perm = torch.tensor([3, 0, 2, 1])
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(4)
    y = _Rows.apply(x, perm // 2, inverse, 2)
    assert y.tolist() == [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]
    (y * torch.tensor([[1.0], [10.0], [100.0], [1000.0]])).sum().backward()
    # row 0 was copied to sorted positions 1 and 3 (weights 10, 1000); row 1 to 0 and 2 (1, 100)
    assert x.grad.tolist() == [[1010.0, 1010.0], [101.0, 101.0]]


def _experts(family: str):
    torch.manual_seed(0)
    if family == "qwen3_moe":
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts as Experts

        cfg = Qwen3MoeConfig(hidden_size=16, moe_intermediate_size=8, num_experts=8, num_experts_per_tok=2)
    else:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralExperts as Experts

        cfg = MixtralConfig(hidden_size=16, intermediate_size=8, num_local_experts=8, num_experts_per_tok=2)
    experts = Experts(cfg)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return experts


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
@pytest.mark.parametrize("grouped", [True, False])
def test_values_and_gradients_match_transformers_eager(family, grouped):
    experts = _experts(family)
    hidden = torch.randn(3, 16)
    # 3 tokens x 2 slots reach at most 6 of the 8 experts: some groups are empty, one expert gets two tokens
    index = torch.tensor([[5, 1], [1, 7], [0, 5]])
    weights = torch.softmax(torch.randn(3, 2), -1)

    def run(fn):
        experts.zero_grad()
        h, w = hidden.clone().requires_grad_(), weights.clone().requires_grad_()
        out = fn(h, w)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out, h.grad, w.grad, [p.grad.clone() for p in experts.parameters()]

    experts.config._experts_implementation = "eager"
    want = run(lambda h, w: experts(h, index, w))
    got = run(lambda h, w: experts_forward(experts, h, index, w, grouped=grouped))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[3], want[3], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert want[3][0].abs().sum() > 0  # the comparison saw real expert gradients


def test_tiny_model_logprobs_and_grads_match_grouped_mm():
    from transformers import AutoModelForCausalLM

    register()
    ids = torch.randint(0, 400, (4, 12), generator=torch.Generator().manual_seed(0))
    results = []
    for impl in ("grouped_mm", "purerl"):
        model = AutoModelForCausalLM.from_pretrained("models/tiny-moe-base", experts_implementation=impl)
        logits = model(input_ids=ids).logits
        logits.logsumexp(-1).mean().backward()
        experts = model.model.layers[0].mlp.experts
        results.append((logits.detach(), experts.gate_up_proj.grad, experts.down_proj.grad))
    for a, b in zip(*results, strict=True):  # fp32 sums in another order: ~1e-6 apart (seen 1.3e-6 on a logit)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_unknown_experts_implementation_is_named():
    with pytest.raises(ValueError, match=r"model.experts_implementation 'fast' is not one of .*'purerl'"):
        load_config("configs/tiny.yaml", ["model.experts_implementation=fast"])
