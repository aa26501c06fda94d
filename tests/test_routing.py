"""Routing bookkeeping without an engine: request-id parsing, batch layout of captured routing, agreement."""

import torch

from rl.batch.build import build_tokens
from rl.families import Routing
from rl.trainer.moe import sampler_agreement
from rollout.types import Completion, RolloutGroup
from rollout.vllm_ext.routing import parse_request_id


def test_parse_request_id_of_parallel_samples():
    assert parse_request_id("3_17-9e70dd3c") == ("17", 3)
    assert parse_request_id("0_0-ab") == ("0", 0)
    assert parse_request_id("5-ab") == ("5", 0)  # n = 1: no child prefix


def test_captured_routing_lines_up_with_input_positions():
    # prompt of 3 tokens, 2 generated: the engine fed 4 tokens (the last sampled one never is)
    r0 = torch.tensor([[[0, 1]], [[2, 3]], [[1, 2]], [[0, 3]]], dtype=torch.int16)  # (4, layers=1, k=2)
    r1 = torch.tensor([[[1, 1]], [[2, 2]], [[3, 3]]], dtype=torch.int16)  # 3 prompt + 1 generated
    g = RolloutGroup(0, [5, 6, 7], [Completion([8, 9], "ab", [-0.1, -0.2], "stop", r0),
                                    Completion([8], "a", [-0.3], "stop", r1)])
    b = build_tokens([g], pad_id=0)
    assert b.sampler_experts.shape == (2, 5, 1, 2)
    assert b.sampler_experts[0, :4].tolist() == r0.long().tolist() and b.sampler_experts[0, 4].tolist() == [[0, 0]]
    assert b.sampler_experts[1, :3].tolist() == r1.long().tolist()
    # one completion without routing: no batch routing at all
    g.completions[1].routed_experts = None
    assert build_tokens([g], pad_id=0).sampler_experts is None


def test_sampler_agreement_counts_position_layer_pairs():
    # b=1, w=3, E=4, k=2, two layers
    l0 = torch.tensor([[5.0, 4.0, 0.0, 0.0], [0.0, 0.0, 5.0, 4.0], [9.0, 0.0, 0.0, 8.0]])  # top-2: {0,1} {2,3} {0,3}
    l1 = torch.tensor([[0.0, 5.0, 4.0, 0.0], [5.0, 0.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])  # {1,2} {0,3} ...
    sampler = torch.tensor([[[[1, 0], [2, 1]], [[3, 2], [0, 1]], [[0, 0], [0, 0]]]])  # (1, 3, 2, 2)
    positions = torch.tensor([[True, True, False]])
    # layer 0: {0,1}=={0,1} yes, {2,3}=={2,3} yes; layer 1: {1,2}=={1,2} yes, {0,3} vs {0,1} no
    assert sampler_agreement((l0, l1), sampler, positions, Routing(top_k=2), [None, None]) == (3, 4)
