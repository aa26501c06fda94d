"""Fast CPU tests of the pure objectives: hand-worked values, invariances, gradients, registries."""

from __future__ import annotations

import pytest
import torch

from rl.collect.scoring import ScoredGroups
from rl.config import settings_of
from rl.errors import ConfigError
from rl.objectives import ADVANTAGES, LOSSES, AdvantageInputs, LossInputs, get_advantage, get_loss
from rl.objectives.aggregation import aggregate, count_seqs, count_tokens
from rl.objectives.kl import kl_penalty
from rl.objectives.shaping import overlong_penalty
from rl.registry import Registry

NAN, INF = float("nan"), float("inf")
T, F = True, False


def close(actual: torch.Tensor, expected: list | float, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# ---------------------------------------------------------------- registry


def test_registry_rejects_duplicates_and_lists_names():
    reg = Registry("widget")
    reg.register("b")(lambda: 1)
    a = reg.register("a")(lambda: 2)
    reg.register("a")(a)  # the same object again is a no-op
    with pytest.raises(ValueError, match="duplicate widget name 'a'"):
        reg.register("a")(lambda: 3)
    with pytest.raises(ValueError, match="valid names: a, b"):
        reg.get("c")
    assert reg.names() == ["a", "b"] and reg.get("a")() == 2 and reg.config_class("a") is None


def builtins(registry) -> set[str]:
    """The names registered by purerl itself (a plug-in test may have added its own to the same registry)."""
    return {n for n, fn in registry.copy()._items.items() if fn.__module__.startswith("rl.objectives")}


def test_every_builtin_objective_has_a_hand_worked_case():
    assert builtins(ADVANTAGES) == set(HAND_ADVANTAGES)  # the dicts at the end of this file
    assert builtins(LOSSES) == set(HAND_LOSSES)
    with pytest.raises(ValueError, match="valid names: .*dr_grpo, grpo, reinforce_pp, rloo"):
        get_advantage("ppo")
    with pytest.raises(ValueError, match="valid names: .*cispo, gspo, ppo_clip"):
        get_loss("grpo")


def run_loss(name: str, logps, old, advantages, mask, is_weight=None, **settings):
    """The registered loss `name` with its config built from `settings`; (per-token loss, metrics)."""
    cfg = settings_of(LOSSES, name, **settings)
    out = get_loss(name)(LossInputs(logps, old, advantages, mask, is_weight), cfg)
    return out.per_token, out.metrics


# ---------------------------------------------------------------- advantages

R = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]  # P=2 groups of G=3, all valid
ALL = [[T, T, T], [T, T, T]]


def adv(name: str, rewards, valid, **settings) -> torch.Tensor:
    return advantage(name, torch.tensor(rewards), torch.tensor(valid), **settings)


def advantage(name: str, rewards: torch.Tensor, valid: torch.Tensor, **settings) -> torch.Tensor:
    """The registered estimator `name` with its config built from `settings`."""
    return get_advantage(name)(AdvantageInputs(rewards, valid), settings_of(ADVANTAGES, name, **settings))


def test_grpo_hand():
    # row 0: mean 1/3, dev (2/3, -1/3, -1/3), sum sq 6/9, unbiased var (6/9)/2 = 1/3, std 0.577350
    #        A = (0.666667, -0.333333, -0.333333) / 0.577350 = (1.154701, -0.577350, -0.577350)
    # row 1: mean 2/3, dev (1/3, 1/3, -2/3), same std -> (0.577350, 0.577350, -1.154701)
    close(adv("grpo", R, ALL, eps=0.0), [[1.154701, -0.577350, -0.577350], [0.577350, 0.577350, -1.154701]])


def test_grpo_masked_and_degenerate_groups():
    # row 0: valid (1, 0): mean 0.5, dev (0.5, -0.5), unbiased var 0.5/1, std 0.707107 -> (0.707107, -0.707107)
    # row 1: one valid sample -> 0; row 2: uniform rewards -> std 0 -> 0 / (0 + eps) = 0 (default eps)
    rewards = [[1.0, 0.0, NAN], [3.0, 0.0, 5.0], [1.0, 1.0, 1.0]]
    out = adv("grpo", rewards, [[T, T, F], [T, F, F], [T, T, T]])
    close(out, [[0.707107, -0.707107, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_dr_grpo_hand():
    # r - mean_g: row 0 mean 1/3 -> (2/3, -1/3, -1/3); row 1 mean 2/3 -> (1/3, 1/3, -2/3)
    close(adv("dr_grpo", R, ALL), [[0.666667, -0.333333, -0.333333], [0.333333, 0.333333, -0.666667]])
    # masked: row 0 valid (1, 0) mean 0.5 -> (0.5, -0.5, 0); row 1 valid (3, 5) mean 4 -> (-1, 0, 1)
    out = adv("dr_grpo", [[1.0, 0.0, NAN], [3.0, INF, 5.0]], [[T, T, F], [T, F, T]])
    close(out, [[0.5, -0.5, 0.0], [-1.0, 0.0, 1.0]])


def test_rloo_hand():
    # row 0: 1 - (0+0)/2 = 1;  0 - (1+0)/2 = -0.5 (twice)
    # row 1: 1 - (1+0)/2 = 0.5 (twice);  0 - (1+1)/2 = -1
    close(adv("rloo", R, ALL), [[1.0, -0.5, -0.5], [0.5, 0.5, -1.0]])
    # masked row 0, valid (2, 0, _, 4): 2 - (0+4)/2 = 0; 0 - (2+4)/2 = -3; 4 - (2+0)/2 = 3
    # row 1: a single valid sample has no leave-one-out baseline -> 0
    out = adv("rloo", [[2.0, 0.0, NAN, 4.0], [1.0, 7.0, NAN, NAN]], [[T, T, F, T], [T, F, F, F]])
    close(out, [[0.0, -3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])


def test_reinforce_pp_hand():
    # group-centred: (2/3, -1/3, -1/3, 1/3, 1/3, -2/3); batch mean 0; sum sq 12/9 = 4/3;
    # unbiased var (4/3)/5 = 0.266667, std 0.516398; 0.666667/0.516398 = 1.290994, 0.333333/0.516398 = 0.645497
    close(
        adv("reinforce_pp", R, ALL, eps=0.0),
        [[1.290994, -0.645497, -0.645497], [0.645497, 0.645497, -1.290994]],
    )
    # masked: centred (0.5, -0.5, _, -1, _, 1); mean 0; sum sq 2.5; var 2.5/3 = 0.833333, std 0.912871
    # 0.5/0.912871 = 0.547723, 1/0.912871 = 1.095445
    out = adv("reinforce_pp", [[1.0, 0.0, NAN], [3.0, 0.0, 5.0]], [[T, T, F], [T, F, T]], eps=0.0)
    close(out, [[0.547723, -0.547723, 0.0], [-1.095445, 0.0, 1.095445]])


@pytest.mark.parametrize("name", sorted(builtins(ADVANTAGES)))
def test_advantage_ignores_masked_rewards(name):
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.2, 1.0, 1.0, 0.0]])
    valid = torch.tensor([[T, T, F, T], [T, F, T, T]])
    garbage = torch.where(valid, rewards, torch.tensor([[NAN, INF, -INF, NAN], [INF, 1e9, NAN, NAN]]))
    clean = advantage(name, rewards, valid)
    torch.testing.assert_close(advantage(name, garbage, valid), clean)
    assert torch.all(clean[~valid] == 0) and torch.isfinite(clean).all()


@pytest.mark.parametrize("name", sorted(builtins(ADVANTAGES)))
def test_advantage_permutation_equivariance(name):
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(4, 5, generator=gen)  # (P, G)
    valid = torch.rand(4, 5, generator=gen) > 0.2
    base = advantage(name, rewards, valid)
    within = torch.tensor([3, 0, 4, 1, 2])  # permute samples inside every group
    torch.testing.assert_close(advantage(name, rewards[:, within], valid[:, within]), base[:, within])
    rows = torch.tensor([2, 0, 3, 1])  # permute groups
    torch.testing.assert_close(advantage(name, rewards[rows], valid[rows]), base[rows])


# ---------------------------------------------------------------- losses

CLIP = {"clip_low": 0.2, "clip_high": 0.28}  # clip range [0.8, 1.28]
A2 = torch.tensor([1.0, -2.0])  # (B,)


def test_ppo_clip_hand():
    ratios = torch.tensor([[1.5, 1.0, 0.5], [1.1, 0.7, 4.0]])
    old = torch.full((2, 3), -1.0)
    logps = old + ratios.log()
    mask = torch.ones(2, 3, dtype=torch.bool)
    # A=+1: r=1.5: max(-1.5, -1.28) = -1.28 (clipped); r=1: -1; r=0.5: max(-0.5, -0.8) = -0.5
    # A=-2: r=1.1: max(2.2, 2.2) = 2.2; r=0.7: max(1.4, 1.6) = 1.6 (clipped); r=4: max(8, 2.56) = 8
    loss, m = run_loss("ppo_clip", logps, old, A2, mask, **CLIP)
    close(loss, [[-1.28, -1.0, -0.5], [2.2, 1.6, 8.0]])
    close(m["clip_frac"], 2 / 6)  # 0.333333
    close(m["ratio_mean"], 8.8 / 6)  # (1.5+1+0.5+1.1+0.7+4)/6 = 1.466667
    close(m["dual_clip_frac"], 0.0)
    # dual clip c=3 on A<0: min(8, -3*-2 = 6) = 6; the others (2.2, 1.6) are below 6
    loss, m = run_loss("ppo_clip", logps, old, A2, mask, dual_clip=3.0, **CLIP)
    close(loss, [[-1.28, -1.0, -0.5], [2.2, 1.6, 6.0]])
    close(m["dual_clip_frac"], 1 / 6)
    # is_weight (0.5, 1, 1 / 2, 1, 1): -1.28*0.5 = -0.64, 2.2*2 = 4.4
    w = torch.tensor([[0.5, 1.0, 1.0], [2.0, 1.0, 1.0]])
    loss, _ = run_loss("ppo_clip", logps, old, A2, mask, is_weight=w, **CLIP)
    close(loss, [[-0.64, -1.0, -0.5], [4.4, 1.6, 8.0]])
    # masking the last column: those losses become 0, clip_frac = 2 clipped / 4 valid
    loss, m = run_loss("ppo_clip", logps, old, A2, torch.tensor([[T, T, F], [T, T, F]]), **CLIP)
    close(loss, [[-1.28, -1.0, 0.0], [2.2, 1.6, 0.0]])
    close(m["clip_frac"], 0.5)


def test_ppo_clip_rejects_bad_dual_clip():
    with pytest.raises(ConfigError, match="dual_clip must be > 1"):
        settings_of(LOSSES, "ppo_clip", dual_clip=0.5, **CLIP)


def test_gspo_hand():
    log_ratio = torch.tensor([[0.1, 0.3, -0.1], [0.0, -0.6, 0.0]])
    old = torch.full((2, 3), -1.0)
    logps = old + log_ratio
    logps[1, 2] = INF  # masked garbage
    mask = torch.tensor([[T, T, T], [T, T, F]])
    # row 0: mean log r = (0.1+0.3-0.1)/3 = 0.1, s = e^0.1 = 1.105171 in [0.8, 1.28]; A=1 -> -1.105171
    # row 1: mean log r = (0-0.6)/2 = -0.3, s = e^-0.3 = 0.740818; A=-2: max(1.481636, 0.8*2 = 1.6) = 1.6
    loss, m = run_loss("gspo", logps, old, A2, mask, **CLIP)
    close(loss, [[-1.105171, -1.105171, -1.105171], [1.6, 1.6, 0.0]])
    close(m["clip_frac"], 2 / 5)  # the 2 valid tokens of row 1 out of 5 valid tokens
    close(m["ratio_mean"], (1.105171 + 0.740818) / 2)  # 0.922995, over sequences


def _gspo_sequence_level(logps, old, advantages, mask, clip_low, clip_high):
    """Paper's GSPO objective written directly at sequence level: mean_i max(-s_i A_i, -clip(s_i) A_i)."""
    per_seq = []
    for i in range(logps.shape[0]):
        m = mask[i]
        s_i = torch.exp((logps[i][m] - old[i][m]).mean())
        a = advantages[i]
        per_seq.append(torch.maximum(-s_i * a, -s_i.clamp(1 - clip_low, 1 + clip_high) * a))
    return torch.stack(per_seq).mean()


def test_gspo_gradient_matches_sequence_level():
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=gen) * 3
    delta = torch.randn(3, 5, generator=gen) * 0.05
    delta[2] = 0.5  # s = e^0.5 = 1.65 > 1.28 with A>0: clipped, zero gradient
    mask = torch.tensor([[T, T, T, T, F], [T, T, F, F, F], [T, T, T, T, T]])
    advantages = torch.tensor([1.0, -0.7, 0.5])
    logps_tok = (old + delta).clone().requires_grad_(True)
    logps_seq = (old + delta).clone().requires_grad_(True)
    per_token, _ = run_loss("gspo", logps_tok, old, advantages, mask, **CLIP)
    tok_obj = aggregate(per_token, mask, "seq_mean_token_mean")
    seq_obj = _gspo_sequence_level(logps_seq, old, advantages, mask, **CLIP)
    tok_obj.backward()
    seq_obj.backward()
    torch.testing.assert_close(tok_obj, seq_obj)
    torch.testing.assert_close(logps_tok.grad, logps_seq.grad)
    assert torch.all(logps_tok.grad[2] == 0) and torch.all(logps_tok.grad[~mask] == 0)
    assert logps_tok.grad[0, 0] != 0


def test_cispo_hand_and_gradient():
    ratios = torch.tensor([[1.5, 1.0, 0.5], [1.1, 4.0, 0.7]])
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, -0.2]], requires_grad=True)
    old = logps.detach() - ratios.log()
    mask = torch.ones(2, 3, dtype=torch.bool)
    # w = clip(r, 0.8, 1.28): (1.28, 1.0, 0.8 / 1.1, 1.28, 0.8); loss = -w * A * logp
    # A=+1: -1.28*-1 = 1.28, -1*-2 = 2, -0.8*-0.5 = 0.4
    # A=-2: 2*1.1*-1 = -2.2, 2*1.28*-3 = -7.68, 2*0.8*-0.2 = -0.32
    loss, m = run_loss("cispo", logps, old, A2, mask, **CLIP)
    close(loss, [[1.28, 2.0, 0.4], [-2.2, -7.68, -0.32]])
    close(m["clip_frac"], 4 / 6)  # 1.5, 0.5, 4.0, 0.7 outside [0.8, 1.28]
    close(m["ratio_mean"], 8.8 / 6)
    # d loss / d logp = -w * A only (weight is stop-gradient; a gradient through r would add -A*logp*r at
    # the unclipped tokens r=1.0, 1.1): (-1.28, -1, -0.8 / 2.2, 2.56, 1.6)
    loss.sum().backward()
    close(logps.grad, [[-1.28, -1.0, -0.8], [2.2, 2.56, 1.6]])
    with pytest.raises(TypeError, match="dual_clip"):  # cispo's config has no such field: its weight is clipped already
        settings_of(LOSSES, "cispo", dual_clip=3.0, **CLIP)


@pytest.mark.parametrize("name", sorted(builtins(LOSSES)))
def test_loss_ignores_masked_garbage(name):
    gen = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 4, generator=gen) * 2
    logps = old + torch.randn(3, 4, generator=gen) * 0.3
    mask = torch.tensor([[T, T, T, F], [T, F, F, F], [F, F, F, F]])
    advantages = torch.tensor([0.5, -1.0, 2.0])
    w = torch.rand(3, 4, generator=gen) + 0.5
    garbage = torch.tensor([[0, 0, 0, INF], [0, -INF, NAN, INF], [NAN, INF, -INF, 1e30]])
    bad_logps = torch.where(mask, logps, garbage).requires_grad_(True)
    bad_old = torch.where(mask, old, garbage.flip(0))
    bad_w = torch.where(mask, w, garbage)
    clean_logps = logps.clone().requires_grad_(True)
    clean, m_clean = run_loss(name, clean_logps, old, advantages, mask, is_weight=w, **CLIP)
    bad, m_bad = run_loss(name, bad_logps, bad_old, advantages, mask, is_weight=bad_w, **CLIP)
    torch.testing.assert_close(bad, clean)
    assert torch.all(bad[~mask] == 0)
    for k in m_clean:
        torch.testing.assert_close(m_bad[k], m_clean[k])
        assert m_bad[k].ndim == 0
    bad.sum().backward()
    clean.sum().backward()
    torch.testing.assert_close(bad_logps.grad, clean_logps.grad)
    assert torch.isfinite(bad_logps.grad).all()


# ---------------------------------------------------------------- aggregation

LOSS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
MASK = [[T, T, F], [T, F, F], [F, F, F]]  # row 2 has no valid token


def test_aggregate_hand():
    loss, mask = torch.tensor(LOSS), torch.tensor(MASK)
    loss[0, 2] = INF  # masked garbage
    close(aggregate(loss, mask, "token_mean"), 7 / 3)  # (1+2+4)/3 tokens = 2.333333
    close(aggregate(loss, mask, "seq_mean_token_mean"), 2.75)  # ((1+2)/2 + 4/1) / 2 seqs = (1.5+4)/2
    close(aggregate(loss, mask, "seq_mean_token_sum_norm", max_len=4), 0.875)  # 7 / (2 seqs * 4)
    # global counts override the local ones: 7/14 = 0.5; 5.5/11 = 0.5; 7/(10*4) = 0.175
    close(aggregate(loss, mask, "token_mean", num_tokens=14), 0.5)
    close(aggregate(loss, mask, "seq_mean_token_mean", num_seqs=11), 0.5)
    close(aggregate(loss, mask, "seq_mean_token_sum_norm", num_seqs=10, max_len=4), 0.175)


def test_aggregate_errors():
    loss, mask = torch.tensor(LOSS), torch.tensor(MASK)
    valid = "valid modes: seq_mean_token_mean, seq_mean_token_sum_norm, token_mean"
    with pytest.raises(ValueError, match=valid):
        aggregate(loss, mask, "sum")
    with pytest.raises(ValueError, match="needs max_len"):
        aggregate(loss, mask, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_aggregate_micro_batches_sum_to_full(mode):
    gen = torch.Generator().manual_seed(2)
    loss = torch.randn(6, 5, generator=gen)
    mask = torch.rand(6, 5, generator=gen) > 0.4
    mask[3] = False  # an empty sequence
    full = aggregate(loss, mask, mode, max_len=5)
    counts = {"num_seqs": count_seqs(mask), "num_tokens": count_tokens(mask), "max_len": 5}
    parts = [aggregate(loss[s], mask[s], mode, **counts) for s in (slice(0, 2), slice(2, 3), slice(3, 6))]
    torch.testing.assert_close(torch.stack(parts).sum(), full)


# ---------------------------------------------------------------- KL


def test_kl_hand():
    logps, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])  # log(pi/ref) = (0.5, -1)
    close(kl_penalty(logps, ref, "k1"), [[0.5, -1.0]])
    close(kl_penalty(logps, ref, "k2"), [[0.125, 0.5]])  # 0.5*0.25, 0.5*1
    # k3: e^-0.5 - 1 + 0.5 = 0.606531 - 0.5 = 0.106531;  e^1 - 1 - 1 = 0.718282
    close(kl_penalty(logps, ref, "k3"), [[0.106531, 0.718282]])
    close(kl_penalty(ref, ref, "k3"), [[0.0, 0.0]])
    with pytest.raises(ValueError, match="valid kinds: k1, k2, k3"):
        kl_penalty(logps, ref, "k4")


# ---------------------------------------------------------------- DAPO helpers


def test_groups_with_signal_hand():
    rewards = torch.tensor(
        [
            [1.0, 1.0, 1.0],  # all equal -> drop
            [1.0, 0.0, 1.0],  # mixed -> keep
            [0.0, 0.0, 0.0],  # all equal -> drop
            [1.0, 0.0, NAN],  # valid (1, 0) differ -> keep
            [1.0, 0.0, 0.0],  # one valid sample -> drop
            [1.0, 1.0, 0.0],  # valid (1, 1) equal; only the masked one differs -> drop
        ]
    )
    valid = torch.tensor([[T, T, T], [T, T, T], [T, T, T], [T, T, F], [T, F, F], [T, T, F]])
    assert ScoredGroups(rewards, valid, {}, {}).has_signal().tolist() == [F, T, F, T, F, F]


def test_overlong_penalty_hand():
    # L_max=10, L_cache=4 -> buffer starts after 6: 3,6 -> 0; 7 -> (6-7)/4 = -0.25; 8 -> -0.5; 10 -> -1; 12 -> -1
    lengths = torch.tensor([3, 6, 7, 8, 10, 12])
    close(overlong_penalty(lengths, 10, 4), [0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    close(overlong_penalty(lengths, 10, 4, penalty=0.5), [0.0, 0.0, -0.125, -0.25, -0.5, -0.5])
    assert overlong_penalty(lengths, 10, 4).dtype == torch.float32
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(lengths, 10, 0)


# every built-in objective and the test that works it by hand (test_every_builtin_objective_has_a_hand_worked_case)
HAND_ADVANTAGES = {"grpo": test_grpo_hand, "dr_grpo": test_dr_grpo_hand, "rloo": test_rloo_hand,
                   "reinforce_pp": test_reinforce_pp_hand}
HAND_LOSSES = {"ppo_clip": test_ppo_clip_hand, "gspo": test_gspo_hand, "cispo": test_cispo_hand_and_gradient}
