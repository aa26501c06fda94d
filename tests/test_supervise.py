"""run.supervise: a driver killed under the supervisor is resumed with no person acting, and the data ledger equals
an undisturbed run's; a user error stops the supervisor with the reason, after one attempt. Real runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.errors import ConfigError
from rl.run.supervise import next_move
from rl.trainer.checkpoint import complete_checkpoints

RUN = ["trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32", "trainer.steps=3",
       "run.eval_before=false", "run.eval_after=false", "run.save_every=1", "run.save_checkpoint=false",
       "run.supervise=true"]
ENV = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def test_what_the_supervisor_does_after_each_exit():
    assert next_move(0, 0, 3, False, True) == "done"
    assert next_move(2, 0, 3, True, True) == "stop"  # a user error: a restart cannot fix it
    assert next_move(-signal.SIGKILL, 0, 3, True, True) == "resume"
    assert next_move(1, 2, 3, True, True) == "resume"
    assert next_move(3, 3, 3, True, True) == "stop"  # restarts used up
    assert next_move(-signal.SIGKILL, 0, 3, False, True) == "start over"  # died before the first checkpoint
    assert next_move(-signal.SIGKILL, 0, 3, False, False) == "stop"  # the same, in a bucket
    with pytest.raises(ConfigError, match="run.supervise needs run.save_every > 0"):
        load_config("configs/tiny.yaml", ["run.supervise=true"])


def supervised(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *RUN, *extra,
                             f"run.dir={run_dir}"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def driver_of(supervisor: subprocess.Popen) -> int:
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.engines
def test_a_driver_killed_under_the_supervisor_is_resumed_and_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    sup = supervised(run_dir)
    try:
        deadline = time.time() + 300
        while not any(p.name == "step-000001" for p in complete_checkpoints(run_dir)):
            assert sup.poll() is None and time.time() < deadline, "the supervised run ended or stalled before step 1"
            time.sleep(0.2)
        os.kill(driver_of(sup), signal.SIGKILL)  # the driver alone: the supervisor reaps what it started
        out, _ = sup.communicate(timeout=400)
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
    assert sup.returncode == 0, out[-3000:]
    assert "supervisor: the run ended with killed by SIGKILL" in out and "restart 1 of 3: resuming" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["supervisor"]["restarts"] == 1 and summary["resumed_from_step"] in (1, 2, 3)
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sampler = EpochSampler(sum(1 for _ in open("rl/tasks/arithmetic/data/train.jsonl")), 0)
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert [m["data/indices"] for m in logged] == [sampler.next(4) for _ in range(3)]  # an undisturbed run's


def test_a_user_error_stops_the_supervisor_with_the_reason(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")  # a run dir that already holds a run: the driver refuses it
    sup = supervised(tmp_path)
    out, _ = sup.communicate(timeout=120)
    assert sup.returncode == 2, out[-3000:]
    assert "already holds a run" in out
    assert "supervisor: the run ended with exit status 2 after" in out
    assert "not restarted: a user error, which a restart cannot fix" in out and "restart 1" not in out
