"""Exact resume after a SIGKILL: the data ledger of a killed-and-resumed run equals an uninterrupted run's,
no index repeats, and the resumed policy starts from checkpoint N's weights. Real Ray + vLLM runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rl.config import load_config
from rl.train import train
from rl.trainer.checkpoint import complete_checkpoints

pytestmark = pytest.mark.engines

COMMON = ["trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32", "trainer.steps=4",
          "trainer.lr=1e-3", "run.eval_before=false", "run.eval_after=false", "run.save_every=1", "run.keep_last=2"]


def ledger(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # make test: tests/test_storage.py kills a run and resumes it exactly, from a bucket
def test_sigkill_then_resume_is_exact(tmp_path):
    full = tmp_path / "full"
    train(load_config("configs/tiny.yaml", COMMON + [f"run.dir={full}"]))
    want = [m["data/indices"] for m in ledger(full)]

    killed = tmp_path / "killed"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *COMMON,
                             f"run.dir={killed}"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(p.name == "step-000002" for p in complete_checkpoints(killed)):
        assert proc.poll() is None and time.time() < deadline, "the run to kill ended or stalled before step 2"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    ckpt = complete_checkpoints(killed)[-1]
    n = int(ckpt.name.split("-")[1])
    assert n in (2, 3) and len(complete_checkpoints(killed)) <= 2  # keep_last
    weights_n = load_file(ckpt / "model.safetensors")

    summary = train(load_config("configs/tiny.yaml", COMMON + [f"run.dir={killed}", "run.resume=true"]))
    assert summary["resumed_from_step"] == n
    got = ledger(killed)
    assert [m["step"] for m in got] == [1, 2, 3, 4]  # steps logged after checkpoint N were dropped and redone
    assert [m["data/indices"] for m in got] == want  # the data cursor resumed exactly
    flat = [i for m in got for i in m["data/indices"]]
    assert len(flat) == len(set(flat))
    # the first resumed step ran on checkpoint N's weights: the engines were started from that folder, and the
    # trainer's logprobs on their samples match (parity), so the trainer holds the same weights
    assert got[n]["rollout/logprob_abs_diff_max"] < 1e-3
    assert all(not torch.equal(weights_n[k], load_file(killed / "checkpoint" / "model.safetensors")[k])
               for k in ["lm_head.weight"])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        train(load_config("configs/tiny.yaml", COMMON + [f"run.dir={tmp_path}", "run.resume=true"]))


# replicate: in make test through tests/test_storage.py (two ranks resumed from a bucket)
@pytest.mark.parametrize("sharding", [pytest.param("replicate", marks=pytest.mark.slow), "fsdp"])
def test_resume_with_two_trainer_ranks(tmp_path, sharding):
    """trainer.ranks=2: rank 0 writes the weights, optimizer and schedule (under FSDP gathered whole from the
    shards), every rank its RNG; a resumed run's ranks load them, so step 3's learning rate continues the warm-up
    and its logprobs match the engines' (started from the same checkpoint)."""
    from rl.data.sampler import EpochSampler

    args = ["trainer.ranks=2", f"trainer.sharding={sharding}", "trainer.warmup_steps=4", "trainer.prompts_per_step=4", "rollout.n=4",
            "rollout.max_new_tokens=32", "run.eval_before=false", "run.eval_after=false", "run.save_every=1",
            "run.save_checkpoint=false", f"run.dir={tmp_path}"]
    train(load_config("configs/tiny.yaml", args + ["trainer.steps=2"]))
    step2 = tmp_path / "checkpoints" / "step-000002"
    assert (step2 / "rng_rank1.pt").is_file()
    state = torch.load(step2 / "trainer_state.pt", weights_only=False)
    assert state["sharding"] == sharding
    if sharding == "fsdp":  # the whole optimizer state, keyed by parameter name, in full shapes
        exp_avg = state["optimizer"]["state"]["model.embed_tokens.weight"]["exp_avg"]
        assert exp_avg.shape == (471, 128) and float(exp_avg.abs().sum()) > 0
    summary = train(load_config("configs/tiny.yaml", args + ["trainer.steps=3", "run.resume=true"]))
    assert summary["resumed_from_step"] == 2
    got = ledger(tmp_path)
    # LambdaLR warm-up: lr after step s is lr * min(1, (s + 1) / 5); a schedule restarted at 0 would give 2/5 again
    assert [round(m["lr"] / 1e-4, 6) for m in got] == [0.4, 0.6, 0.8]
    sampler = EpochSampler(sum(1 for _ in open("rl/tasks/arithmetic/data/train.jsonl")), 0)
    assert [m["data/indices"] for m in got] == [sampler.next(4) for _ in range(3)]
    assert got[2]["rollout/logprob_abs_diff_max"] < 1e-3
