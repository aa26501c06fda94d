"""Faults on real Ray actors and vLLM engines: a rollout engine killed mid-generation costs no prompt, and a
run that loses every engine stops with a checkpoint and says why."""

import os
import signal
import threading
import time

import pytest
import ray

from rl.collect.collector import Collector
from rl.collect.generate import sampling
from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.run.session import Session
from rl.train import rl_step

pytestmark = pytest.mark.engines

SMALL = ["rollout.num_engines=2", "rollout.engine_threads=1", "trainer.prompts_per_step=32", "rollout.n=8", "rollout.max_new_tokens=64",
         "data.eval_size=16", "trainer.micro_batch_size=64", "trainer.lr=1e-3", "algo.kl_coef=0"]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def kill_when_busy(pid: int, busy_s: float) -> threading.Thread:
    """SIGKILLs `pid` once it has used `busy_s` of CPU from now: the idle engine is then mid-generation."""
    def run():
        start = cpu_seconds(pid)
        while cpu_seconds(pid) - start < busy_s:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_engine_killed_mid_generation_costs_no_prompt(tmp_path):
    cfg = load_config("configs/tiny.yaml", SMALL + [f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), cfg.data.seed))
        want = EpochSampler(len(s.train), cfg.data.seed).next(32)  # an undisturbed run draws these
        victim = ray.get(s.pool.workers[0].pid.remote())
        killer = kill_when_busy(victim, busy_s=0.3)  # early in the round; `deaths` below checks where it landed
        metrics = rl_step(s, collector, 1)
        killer.join()
        assert s.pool.deaths == [("generate", 0)] and s.pool.restarts == 1  # found dead while generating
        assert ray.get(s.pool.workers[0].pid.remote()) != victim  # engine 0 is a new process
        assert metrics["data/indices"] == s.train.take(want).indices()  # every prompt once, in order
        assert metrics["rollout/engine_restarts"] == 1
        # the new engine got the step's synced weights: its samples match the trainer's logprobs
        groups = ray.get(s.pool.workers[0].generate.remote(s.eval.head(4).ids, [0, 1, 2, 3], sampling(cfg.rollout, 4)))
        assert s.trainer.sync_gap(groups, s.tokenizer.pad_token_id)["max"] < 1e-3
        assert all(len(g.completions) == 4 for g in groups)
    finally:
        s.close()
