"""Faults on real Ray actors and vLLM engines: a rollout engine killed mid-generation, or one frozen past
rollout.call_timeout_s, costs no prompt."""

import dataclasses
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


def kill_when_busy(pid: int, busy_s: float, sig: signal.Signals = signal.SIGKILL, sent: list | None = None) -> threading.Thread:
    """Sends `sig` to `pid` once it has used `busy_s` of CPU from now: the idle engine is then mid-generation. The
    time it was sent is appended to `sent`."""
    def run():
        start = cpu_seconds(pid)
        while cpu_seconds(pid) - start < busy_s:
            time.sleep(0.01)
        os.kill(pid, sig)
        (sent if sent is not None else []).append(time.time())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


DEADLINE_S = 15.0


def test_engine_killed_then_one_frozen_mid_generation_cost_no_prompt(tmp_path, caplog):
    cfg = load_config("configs/tiny.yaml", SMALL + [f"rollout.call_timeout_s={DEADLINE_S}", f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), cfg.data.seed))
        undisturbed = EpochSampler(len(s.train), cfg.data.seed)
        want = undisturbed.next(32)  # an undisturbed run draws these
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
        # seeded requests (rollout.request_seeds): the new engine draws what the other one draws, token for token
        seeded = sampling(cfg.rollout, 4, 1, 0)
        drawn = [[c.token_ids for g in ray.get(w.generate.remote(s.eval.head(4).ids, [0, 1, 2, 3], seeded)) for c in g.completions]
                 for w in s.pool.workers]
        assert drawn[0] == drawn[1] and len({tuple(t) for t in drawn[0]}) > 1

        # step 2: engine 1 freezes mid-generation (SIGSTOP); the pool kills it at the deadline and sends its shard
        # again. The folder the engines started from is gone (as a resumed run's checkpoint after run.keep_last):
        # the new engine starts from the base model and loads the last weights synced
        s.pool.spec = dataclasses.replace(s.pool.spec, model_path=str(tmp_path / "a-deleted-checkpoint"))
        frozen = ray.get(s.pool.workers[1].pid.remote())
        sent: list[float] = []
        freezer = kill_when_busy(frozen, busy_s=0.05, sig=signal.SIGSTOP, sent=sent)  # early: steps are short on a Zen 5
        metrics = rl_step(s, collector, 2)
        freezer.join()
        assert s.pool.hangs == 1 and s.pool.deaths[-1] == ("generate", 1) and metrics["rollout/engine_hangs"] == 1
        said = f"rollout engine 1 (node {s.pool.node_ids[1]}) did not answer generate within rollout.call_timeout_s=15 s"
        found = [r for r in caplog.records if said in r.getMessage()]
        assert len(found) == 1, caplog.text
        assert found[0].created - sent[0] < DEADLINE_S + 30  # detected within the deadline (counted from submission)
        assert ray.get(s.pool.workers[1].pid.remote()) != frozen
        assert metrics["data/indices"] == s.train.take(undisturbed.next(32)).indices()
        assert metrics["rollout/logprob_abs_diff_mean"] < 1e-4  # the new engine's shard came from the synced weights
    finally:
        s.close()
