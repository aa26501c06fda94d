"""The sharded trainer and the placement: two torch.distributed ranks (gloo, Ray actors) train exactly as one rank
on the same global batch, and a placement the cluster cannot hold fails at once with what is missing."""

import dataclasses

import pytest
import ray
import torch

from rl.batch.types import TrainBatch
from rl.config import load_config
from rl.run.placement import PlacementError, check_fits, plan
from rl.trainer.group import TrainerGroup
from rl.trainer.rank import Trainer
from rollout.transport import unpack_tensors

MODEL = "models/tiny-moe-base"
# 4 optimizer steps (2 epochs x 2 mini-batches), micro-batches of 2 rows, a KL term (reference sharded too)
ARGS = ["trainer.ranks=2", "algo.epochs=2", "algo.mini_batch_size=8", "trainer.micro_batch_size=2",
        "trainer.lr=1e-4", "algo.kl_coef=0.05", "algo.loss_agg=token_mean", "trainer.threads=1"]
# Two ranks sum their gradients in a different order than one rank accumulates them, and (rows split over the
# ranks by tokens, rl.trainer.micro) group other rows into micro-batches: float32 rounding, grown by four AdamW
# steps on random tokens (grad norms ~1e5). Adam's step is ill-conditioned where a gradient is near zero, so a few
# coordinates move apart by more. Measured after moving 4.0e-4, the same under replicate and fsdp: 32 of 1.9 M
# coordinates more than 1e-6 apart, 3 more than 5e-6, the worst 3.7e-5 (a q_proj entry; 18 and 2.4e-5 with the
# materialized head) on an AMD EPYC Zen 3 (AVX2); the worst 6.4e-5 on a Zen 5 (AVX-512), whose kernels sum in
# another order. Allowed: 1e-6 on all but 1e-4 of the coordinates, half the movement on the rest (an Adam step
# moves a coordinate at most about lr, whatever its gradient).
# Metrics: 1e-3 relative.
PARAM_TOL = 1e-6


def random_batch(trainer, B=16, L=24, prompt=6, seed=0) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (B, L), generator=g)
    lengths = torch.randint(prompt + 2, L + 1, (B,), generator=g)  # ragged: padding differs per row
    attn = (torch.arange(L)[None] < lengths[:, None]).long()
    mask = (attn[:, 1:] == 1) & (torch.arange(L - 1)[None] >= prompt - 1)
    old, _ = trainer.logprobs(ids, attn)
    old = torch.where(mask, old + 0.01 * torch.randn(B, L - 1, generator=g), 0.0)  # a sampler a little off
    adv = torch.randn(B, generator=g)
    return TrainBatch(ids, attn, mask, old, adv, mask.sum(1), sampler_logps=old.clone())


@pytest.mark.engines
@pytest.mark.parametrize("sharding", ["replicate", "fsdp"])
def test_two_ranks_train_like_one_rank(sharding):
    """Then, on 13 rows (mini-batches of 8 and 5, split over the ranks by tokens), the ranks may run different
    numbers of micro-batches: under FSDP the short rank runs empty passes to keep the collectives in step, and the
    losses still match one rank's."""
    cfg = load_config("configs/tiny.yaml", ARGS + [f"trainer.sharding={sharding}"])
    one = Trainer(cfg, MODEL, MODEL)
    batch = random_batch(one)
    batch = dataclasses.replace(batch, ref_logps=one.logprobs(batch.input_ids, batch.attention_mask, "reference")[0])
    odd = random_batch(one, B=13, seed=1)
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        group = TrainerGroup(cfg, MODEL, MODEL, [{"num_cpus": 1}] * 2)
        # under FSDP only rank 0 reads the weights; rank 1 starts on the meta device and gets its shards by broadcast
        sources = [ray.get(r.call.remote("__getattribute__", "weights_from")) for r in group.ranks]
        assert sources == (["disk", "rank 0"] if sharding == "fsdp" else ["disk", "disk"])
        # rows split over ranks by tokens (under FSDP the rank with fewer micro-batches runs empty passes); compared
        # on the scored tokens, as positions past a row's end hold pad-token values that depend on the grouping
        ref2, _ = group.logprobs(odd.input_ids, odd.attention_mask, "reference")
        ref1, _ = one.logprobs(odd.input_ids, odd.attention_mask, "reference")
        assert torch.allclose(ref2[odd.mask], ref1[odd.mask], atol=1e-5)
        own2, _ = group.logprobs(odd.input_ids, odd.attention_mask)  # the policy: sharded under FSDP
        own1, _ = one.logprobs(odd.input_ids, odd.attention_mask)
        assert torch.allclose(own2[odd.mask], own1[odd.mask], atol=1e-5)
        m1, before1, rows1 = dataclasses.astuple(one.update(batch))
        w1 = {k: v.clone() for k, v in one.weights()}  # views of the live weights otherwise
        m2, before2, rows2 = dataclasses.astuple(group.update(batch))
        w2 = dict(unpack_tensors(ray.get(group.weights())))
        odd1, odd2 = one.update(odd).metrics, group.update(odd).metrics
        group.shutdown()
    finally:
        ray.shutdown()
    assert m1["optimizer_steps"] == m2["optimizer_steps"] == 4
    for key in ["loss/policy", "loss/kl", "policy/entropy", "loss/clip_frac", "moe/expert_load_cv", "grad_norm"]:
        assert m2[key] == pytest.approx(m1[key], rel=1e-3, abs=1e-6), key
    seen = batch.mask & rows1[:, None]
    assert torch.equal(rows1, rows2) and torch.allclose(before1[seen], before2[seen], atol=1e-5)
    assert odd2["optimizer_steps"] == 4 and odd2["loss/kl"] == pytest.approx(odd1["loss/kl"], rel=1e-3, abs=1e-6)
    assert odd2["loss/policy"] == pytest.approx(odd1["loss/policy"], rel=1e-3, abs=1e-6)
    w0 = dict(Trainer(cfg, MODEL, MODEL).weights())
    moved = max(float((w1[k] - w0[k]).abs().max()) for k in w1)
    diff = torch.cat([(w1[k] - w2[k]).abs().flatten() for k in w1])
    assert moved > 1e-4  # the steps did move the weights, so agreeing below is not trivial
    worst, apart = float(diff.max()), int((diff > PARAM_TOL).sum())
    assert apart <= 1e-4 * diff.numel(), f"{apart} coordinates differ by more than {PARAM_TOL}"
    assert worst < 0.5 * moved, f"2 ranks differ from 1 rank by {worst:.2e} (moved {moved:.2e})"


def test_plan_split_and_colocated():
    split = plan(2, 1.0, 0.0, 2, 2.0, 0.0, colocate=False)
    assert split.bundles == [{"CPU": 1.0}] * 2 + [{"CPU": 2.0}] * 2
    assert split.engine_bundles == [0, 1] and split.rank_bundles == [2, 3] and split.share == 1.0
    co = plan(2, 1.0, 1.0, 2, 2.0, 1.0, colocate=True)
    assert co.bundles == [{"CPU": 2.0, "GPU": 1.0}] * 2 and co.engine_bundles == co.rank_bundles == [0, 1]
    assert co.share == 0.5
    driver = plan(1, 1.0, 0.0, 1, 4.0, 0.0, colocate=False)  # one rank trains in the driver: no bundle for it
    assert driver.bundles == [{"CPU": 1.0}] and driver.rank_bundles == []


def test_placement_that_cannot_fit_names_what_is_missing():
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    with pytest.raises(PlacementError, match="needs 6 CPU in all, the cluster has 4"):
        check_fits([{"CPU": 2.0}] * 3, "PACK", nodes)
    with pytest.raises(PlacementError, match="needs 1 GPU in all, the cluster has 0"):
        check_fits([{"CPU": 1.0, "GPU": 1.0}], "PACK", nodes)
    with pytest.raises(PlacementError, match="no node can hold a bundle"):
        check_fits([{"CPU": 3.0}], "PACK", nodes)
    with pytest.raises(PlacementError, match="STRICT_SPREAD"):
        check_fits([{"CPU": 1.0}] * 3, "STRICT_SPREAD", nodes)
    check_fits([{"CPU": 1.0}] * 4, "SPREAD", nodes)  # fits: no error


@pytest.mark.engines
def test_unsatisfiable_run_fails_fast(tmp_path):
    """The whole CLI: engines asking for a GPU on a cluster without one exit with the reason. (The local cluster
    is started with as many logical CPUs as the config asks for, so CPUs are never short there.)"""
    import subprocess
    import sys
    import time

    t = time.time()
    out = subprocess.run([sys.executable, "-m", "rl.train", "rollout.engine_gpus=1", "run.eval_before=false",
                          f"run.dir={tmp_path / 'r'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stderr[-2000:]
    assert "placement needs 1 GPU in all, the cluster has 0" in out.stderr
    assert time.time() - t < 120  # it did not wait for resources that cannot appear


def test_config_rules_for_ranks_and_colocation():
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="must be >= trainer.ranks"):
        load_config("configs/tiny.yaml", ["trainer.ranks=4", "algo.mini_batch_size=2"])
    with pytest.raises(ConfigError, match="cluster.colocate needs trainer.ranks > 1"):
        load_config("configs/tiny.yaml", ["cluster.colocate=true"])
    assert load_config("configs/tiny.yaml", ["rollout.async=true"]).rollout.async_ is True
