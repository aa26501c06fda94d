"""End to end on the tiny MoE with real Ray actors, real vLLM engines, real verifiers and AdamW.

The sync test is the proof that weight sync works: vLLM's logprobs of its own samples must match
the trainer's on the same tokens after a sync, and must not when the sync is skipped.
"""

import json

import pytest
import ray
import torch
from safetensors.torch import load_file

from rl.batch.build import build_tokens
from rl.batch.types import TrainBatch
from rl.collect.collector import Collector
from rl.collect.generate import StaleWeightsError, sampling
from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.run.session import Session
from rl.sync.parity import max_logprob_gap
from rl.sync.weights import sync_weights
from rl.train import rl_step, train
from rl.trainer.update import policy_step, scoring_of

pytestmark = pytest.mark.engines

SMALL = ["trainer.prompts_per_step=4", "rollout.n=4", "data.eval_size=16", "rollout.max_new_tokens=48",
         "trainer.micro_batch_size=8", "eval.sets.heldout.size=16"]
PARITY_TOL = 1e-3


def test_sync_parity_and_its_negative(tmp_path):
    cfg = load_config("configs/tiny.yaml", SMALL + ["trainer.lr=1e-3", f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        rl_step(s, Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), 0)), 1)  # generate, score, update, sync
        # the sync went through vLLM's RL lifecycle into the `purerl` backend, once each, and set version 1
        report = ray.get(s.pool.workers[0].transfer_report.remote())
        assert report["calls"] == {"init": 1, "start": 1, "update": 1, "finish": 1}
        assert report["last"]["path"] == "reload" and report["plan"] == "all"  # first sync: vLLM's loader, map proven
        assert s.pool.version == 1
        prompts, idx, four = s.eval.head(4).ids, s.eval.head(4).indices(), sampling(cfg.rollout, 4)
        groups = s.pool.generate(prompts, idx, four)
        synced_gap = max_logprob_gap(s.policy, groups, s.tokenizer.pad_token_id, scoring_of(cfg))
        assert synced_gap < PARITY_TOL

        # Update the policy again but skip the sync: the engine now samples from stale weights.
        t = build_tokens(groups, s.tokenizer.pad_token_id)
        batch = TrainBatch(t.input_ids, t.attention_mask, t.response_mask, t.sampler_logps, torch.randn(16),
                           t.response_lengths, sampler_logps=t.sampler_logps)
        policy_step(s.policy, s.trainer.optim, batch, cfg)
        stale = s.pool.generate(prompts, idx, four)
        stale_gap = max_logprob_gap(s.policy, stale, s.tokenizer.pad_token_id, scoring_of(cfg))
        assert stale_gap > PARITY_TOL, "a skipped sync must be caught by the parity check"

        sync_weights(s.sender, s.pool, s.trainer, 2)
        assert ray.get(s.pool.workers[0].transfer_report.remote())["last"]["path"] == "direct"
        resynced = s.pool.generate(prompts, idx, four)
        assert {g.weight_version for g in resynced} == {2}
        assert max_logprob_gap(s.policy, resynced, s.tokenizer.pad_token_id, scoring_of(cfg)) < PARITY_TOL
    finally:
        s.close()


def test_an_engine_that_misses_a_sync_is_caught(tmp_path):
    """Two engines; the second sync reaches engine 0 only. The next step refuses engine 1's groups, naming the
    engine and both versions, before anything trains on them."""
    cfg = load_config("configs/tiny.yaml", SMALL + ["rollout.num_engines=2", "rollout.engine_threads=1",
                                                  f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), 0))
        assert rl_step(s, collector, 1)["sync/weight_version"] == 1
        every = s.pool.live
        s.pool.live = lambda: [0]  # this sync skips engine 1
        sync_weights(s.sender, s.pool, s.trainer, 2)
        s.pool.live = every
        with pytest.raises(StaleWeightsError, match="engine 1 sampled prompt .* with weight version 1, but the "
                                                    "trainer expects version 2"):
            collector.collect(3)
    finally:
        s.close()


@pytest.mark.slow  # make test: tests/test_observability.py (a CLI run's outputs) and tests/test_storage.py
def test_short_training_run_writes_everything(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config("configs/tiny.yaml", SMALL + ["trainer.steps=3", f"run.dir={run_dir}"])
    summary = train(cfg)

    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [0, 1, 2, 3]  # step 0: the evaluation before training
    lines = logged[1:]
    assert logged[0]["eval/heldout/pass@4"] >= logged[0]["eval/heldout/pass@1"] and "reward/mean" not in logged[0]
    assert "eval/heldout/greedy" in lines[-1] and "eval/heldout/greedy" not in lines[0]  # and after the last step
    for m in lines:
        assert 0.0 <= m["reward/accuracy"] <= 1.0 and 0.0 <= m["reward/format"] <= 1.0
        assert 0.0 <= m["reward/mean"] <= 1.1
        assert m["response/len_mean"] > 0 and m["rollout/tokens_per_s"] > 0
        if m["reward/zero_std_frac"] < 1.0:  # some group has a nonzero advantage, so the policy gets a gradient
            assert m["grad_norm"] > 0
        assert m["rollout/logprob_abs_diff_max"] < PARITY_TOL
        # the engine's captured routing matches the trainer's on the sampled tokens (same weights, fp32)
        assert m["moe/routing_agreement"] > 0.99
        assert len(m["data/indices"]) == 4
        for key in ("loss/clip_frac", "loss/kl", "policy/entropy", "time/generate", "time/reward", "time/train", "time/sync"):
            assert key in m
    # the format reward scores the base model's well-formed completions
    assert max(m["reward/format"] for m in lines) > 0.5

    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["steps"] == 3 and saved["eval_problems"] == 16
    assert set(saved["eval"]) == {"0", "3"} and 0 <= saved["eval"]["3"]["heldout/mean@4"] <= 1
    assert 0.0 <= saved["base_accuracy"] <= 1.0 and 0.0 <= saved["final_accuracy"] <= 1.0
    assert saved["sync_max_abs_logprob_diff"] < PARITY_TOL
    assert (run_dir / "config.yaml").read_text().count("prompts_per_step: 4") == 1

    # parameters moved, and the checkpoint is a loadable HF folder
    base = load_file(f"{cfg.model.path}/model.safetensors")
    final = load_file(run_dir / "checkpoint" / "model.safetensors")
    assert base.keys() == final.keys()
    moved = sum(not torch.equal(base[k], final[k]) for k in base)
    assert moved > len(base) // 2


def test_missing_model_path_fails_clearly(tmp_path):
    from rl.trainer.policy import ModelPathError, resolve_model_path

    with pytest.raises(ModelPathError, match="make base-model"):
        resolve_model_path(str(tmp_path / "no-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPathError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))


def test_every_objective_knob_at_once_trains_and_stays_in_sync(tmp_path):
    """GSPO, Dr. GRPO advantages, trainer old logprobs with TIS, 2 epochs x 2 mini-batches, DAPO dynamic
    sampling and soft overlong penalty, KL in the reward, MoE aux loss, a frozen router and routing replay:
    two real steps."""
    run_dir = tmp_path / "run"
    knobs = ["algo.loss=gspo", "algo.loss.clip_low=0.0003", "algo.loss.clip_high=0.0004", "algo.advantage=dr_grpo",
             "algo.loss_agg=seq_mean_token_mean", "algo.old_logprobs=trainer", "algo.tis_cap=2.0", "algo.epochs=2",
             "algo.mini_batch_size=8", "algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=2",
             "algo.overlong=soft", "algo.overlong_buffer=8", "algo.kl_coef=0.01", "algo.kl_in_reward=true",
             "moe.aux_loss_coef=0.01", "moe.freeze_router=true", "moe.routing_replay=trainer"]
    cfg = load_config("configs/tiny.yaml", SMALL + knobs + ["trainer.steps=2", "run.eval_before=false",
                                                          "run.eval_after=false", f"run.dir={run_dir}"])
    summary = train(cfg)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 2 epochs x ceil(sequences / 8) mini-batches
    assert [m["optimizer_steps"] for m in lines] == [2 * -(-len(m["data/indices"]) * 4 // 8) for m in lines]
    for m in lines:
        assert m["rollout/logprob_abs_diff_max"] < PARITY_TOL and abs(m["rollout/ppl_ratio"] - 1) < 1e-3
        assert 1 <= m["sampling/rounds"] <= 3 and m["moe/aux_loss"] > 0 and m["reward/kl_penalty"] > -1e-6
        # the batch fills up unless the round cap was hit; a dropped prompt is never also trained on
        assert len(m["data/indices"]) == 4 or (m["sampling/rounds"] == 3 and len(m["data/indices"]) < 4)
        assert not set(m["data/indices"]) & set(m["data/dropped_indices"])
        assert 0 <= m["moe/expert_load_cv"] and 1 <= m["moe/max_load_ratio"] <= 8 / 2
        assert 0.5 < m["moe/replay_agreement"] <= 1.0  # the update replayed the old policy's routing
    assert summary["sync_max_abs_logprob_diff"] < PARITY_TOL
    # the frozen routers did not move, everything else did
    base = load_file(f"{cfg.model.path}/model.safetensors")
    final = load_file(run_dir / "checkpoint" / "model.safetensors")
    routers = [k for k in base if k.endswith("mlp.gate.weight")]
    assert routers and all(torch.equal(base[k], final[k]) for k in routers)
    assert not torch.equal(base["lm_head.weight"], final["lm_head.weight"])


# sampler in make test-slow: trainer-tis replays the engine's experts in the update as it does, and in the old forward
@pytest.mark.parametrize("old", [pytest.param([], marks=pytest.mark.slow), ["algo.old_logprobs=trainer", "algo.tis_cap=2.0"]],
                         ids=["sampler", "trainer-tis"])
def test_rollout_routing_replay_trains_on_the_engines_experts(tmp_path, old):
    """moe.routing_replay=vllm: the update's forward uses the experts vLLM routed each token to; with the trainer's
    old logprobs (R3 with TIS) their forward does too."""
    run_dir = tmp_path / "run"
    cfg = load_config("configs/tiny.yaml", SMALL + old + ["moe.routing_replay=vllm", "trainer.steps=2", "trainer.lr=1e-3",
                                                  "run.eval_before=false", "run.eval_after=false", f"run.dir={run_dir}"])
    summary = train(cfg)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        # replaying the engine's routing leaves the trainer's logprobs equal to the sampler's
        assert m["rollout/logprob_abs_diff_max"] < PARITY_TOL
        assert m["moe/replay_agreement"] > 0.99 and m["moe/routing_agreement"] > 0.99
    assert summary["sync_max_abs_logprob_diff"] < PARITY_TOL
