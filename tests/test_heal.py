"""A trainer rank that dies (SIGKILL) or hangs (SIGSTOP) mid-run costs no step: the driver names the rank and the
call, rebuilds the group from the state after the last completed step, trains the step again, and the run's data
ledger and weights go on as an undisturbed run's. A real 2-rank run with real faults."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.train import train

pytestmark = pytest.mark.engines

DEADLINE_S = 15.0


def trainer_rank_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::TrainerRank"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def logged_steps(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return sum(1 for x in path.read_text().splitlines() if '"grad_norm"' in x) if path.exists() else 0


def faults(run_dir, done: list) -> None:
    """After step 1: SIGKILL one rank (it dies while step 2 runs). After step 2: SIGSTOP one (it hangs in step 3)."""
    for after, sig in ((1, signal.SIGKILL), (2, signal.SIGSTOP)):
        deadline = time.time() + 300
        while logged_steps(run_dir) < after and time.time() < deadline:
            time.sleep(0.1)
        pids = trainer_rank_pids()
        os.kill(pids[-1], sig)
        done.append((sig.name, time.time()))


def test_a_trainer_rank_killed_then_one_frozen_cost_no_step(tmp_path, capfd):
    cfg = load_config("configs/tiny.yaml", [
        "trainer.ranks=2", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32", "trainer.steps=3",
        "run.eval_before=false", "run.eval_after=false", "run.save_checkpoint=false", "trainer.lr=1e-3",
        f"trainer.call_timeout_s={DEADLINE_S}", f"run.dir={tmp_path}"])
    done = []
    injector = threading.Thread(target=faults, args=(tmp_path, done), daemon=True)
    injector.start()
    train(cfg)
    injector.join(timeout=5)
    said = capfd.readouterr().out
    assert [name for name, _ in done] == ["SIGKILL", "SIGSTOP"]
    assert "trainer rank" in said and "died during" in said
    assert "did not answer" in said and f"within trainer.call_timeout_s={DEADLINE_S:g} s" in said
    assert said.count("the trainer group is back in") == 2

    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    sampler = EpochSampler(sum(1 for _ in open("rl/tasks/arithmetic/data/train.jsonl")), 0)
    assert [m["data/indices"] for m in logged] == [sampler.next(4) for _ in range(3)]  # an undisturbed run's
    last = logged[-1]
    assert last["run/restarts/trainer_died"] == 1 and last["run/restarts/trainer_hung"] == 1
    # the rebuilt group holds the weights the engines hold: the steps after each restart are in parity
    assert all(m["rollout/logprob_abs_diff_mean"] < 1e-4 for m in logged[1:]), [m["rollout/logprob_abs_diff_mean"] for m in logged]
    # step 3 found its frozen rank within the deadline, rebuilt the group and trained again: it took at most the
    # deadline plus 30 s over the undisturbed step 1
    assert logged[2]["time/wall"] < DEADLINE_S + 30 + logged[0]["time/wall"], [m["time/wall"] for m in logged]
