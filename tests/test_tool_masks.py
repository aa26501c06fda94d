"""Tool tokens (rollout/tools) are context, never trained on: the batch masks them out of the loss and the KL and
leaves them out of the response length. A hand-computed case on the real batch builder and objectives."""

import pytest
import torch

from rl.batch.build import build_tokens
from rl.objectives.aggregation import aggregate
from rl.objectives.kl import kl_penalty
from rl.objectives.losses import DualClipConfig, ppo_clip
from rl.objectives.types import LossInputs
from rl.train import response_metrics
from rollout.types import Completion, RolloutGroup


def test_tool_tokens_are_masked_out_of_the_loss_the_kl_and_the_length():
    # prompt [1, 2]; answer: 2 sampled tokens, 3 written by a tool, 1 sampled; a second answer of 2 sampled tokens
    with_tool = Completion([10, 11, 50, 51, 52, 12], "", [-1.0, -1.0, 0.0, 0.0, 0.0, -1.0], "stop",
                           tool_mask=[1, 1, 0, 0, 0, 1])
    plain = Completion([13, 14], "", [-1.0, -1.0], "stop")
    tokens = build_tokens([RolloutGroup(0, [1, 2], [with_tool, plain])], pad_id=0)
    # column p - 1 + j scores answer token j (p = 2)
    assert tokens.response_mask.tolist() == [[False, True, True, False, False, False, True],
                                             [False, True, True, False, False, False, False]]
    assert tokens.response_lengths.tolist() == [3, 2]
    assert response_metrics(tokens, 1.0)["response/len_mean"] == 2.5

    # the policy's logprobs: -1 on sampled tokens, garbage on the tool's (a ratio of e^10, a KL of thousands)
    logps = torch.full((2, 7), -1.0)
    logps[0, 3:6] = 9.0
    old = tokens.sampler_logps.clone()
    old[1, :] = -1.0
    adv = torch.tensor([1.0, -1.0])
    out = ppo_clip(LossInputs(logps, old, adv, tokens.response_mask), DualClipConfig(clip_low=0.2, clip_high=0.2))
    # ratio 1 on every sampled token: -A per token; 3 tokens of -1 and 2 of +1: token mean (-3 + 2) / 5
    assert torch.isclose(aggregate(out.per_token, tokens.response_mask, "token_mean"), torch.tensor(-0.2))
    ref = torch.full((2, 7), -1.0)
    kl = kl_penalty(logps, ref, "k3") * tokens.response_mask
    assert float(kl.sum()) == 0.0  # equal on every sampled token; the tool tokens' 10-nat gap is not counted


def test_a_void_turn_is_masked_out_of_the_step():
    from rl.collect.generate import Round, drop_void_turns
    from rl.collect.scoring import ScoredGroups

    answers = [Completion([1], "", [-1.0], "stop", void_turn=v) for v in (False, True, False, False)]
    scored = ScoredGroups(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.ones(2, 2, dtype=torch.bool), {}, {})
    r = drop_void_turns(Round([RolloutGroup(0, [5], answers[:2]), RolloutGroup(1, [6], answers[2:])], scored, 0.0, 0.0))
    assert r.scored.valid.tolist() == [[True, False], [True, True]]
    # the group left with one valid sample carries no signal; the other still does
    assert r.scored.has_signal().tolist() == [False, True]
    # counted apart from the verifiers' failures: a policy that writes void turns is not a failing verifier
    from rl.collect.generate import tool_metrics

    groups = [RolloutGroup(0, [5], answers[:2]), RolloutGroup(1, [6], answers[2:])]
    assert tool_metrics(groups, True)["tools/void_dropped"] == 1 and tool_metrics(groups, False)["tools/void_dropped"] == 0
    assert tool_metrics(groups, True)["tools/void_rate"] == 0.25


def test_void_turns_dropped_do_not_stop_the_run_as_failing_verifiers():

    from rl.collect import failures
    from rl.train import stop_on_failing_rewards

    failures.watch(None, 0.5, 1)
    stop_on_failing_rewards(None, None, None, {"reward/masked": 100, "reward/samples": 128, "tools/void_dropped": 100})
    with pytest.raises(failures.RewardFailure, match="this step 100 of 128"):  # the same count from a verifier
        failures.WATCH.end_step(100, 128)


def test_the_tools_panel_is_drawn_for_runs_with_tools_only(tmp_path):
    import json

    from rl.run.plot import plot_run

    for name, extra in (("tools", {"tools/call_rate": 0.1, "tools/void_rate": 0.0}), ("plain", {})):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": i, "reward/accuracy": 0.1 * i, "response/len_mean": 10.0, **extra} for i in (1, 2, 3)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        written = {p.name for p in plot_run(run)}
        assert ("tools.png" in written) == bool(extra), written

