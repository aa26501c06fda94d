"""`make ray-up`, `make submit` and `make ray-down`, as the README gives them: a local head with its job server,
a 1-step training job carried there by runtime_env, and the head stopped again."""

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.engines

MAKE_ENV = {"RAY_PORT": "6391", "RAY_DASHBOARD_PORT": "8291", "RAY_CPUS": "3"}


def make(*args, env=None, timeout=600):
    return subprocess.run(["make", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **MAKE_ENV, **(env or {})})


@pytest.mark.slow  # tests/test_storage.py submits a job into a bucket in make test
def test_submit_runs_a_job_on_a_local_head(tmp_path):
    run_dir = tmp_path / "job"
    up = make("ray-up")
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        job = make("submit", f"RUN_DIR={run_dir}", "ARGS=trainer.steps=1 trainer.prompts_per_step=4 rollout.n=4 "
                   "run.eval_before=false run.eval_after=false data.eval_size=16",
                   env={"RAY_ADDRESS": "http://127.0.0.1:8291"})
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        assert "succeeded" in job.stdout + job.stderr
    finally:
        make("ray-down")
    summary = json.loads((run_dir / "summary.json").read_text())  # written by the job, on this (head) node
    assert summary["steps"] == 1 and summary["sync_max_abs_logprob_diff"] < 1e-3


def test_submit_without_address_says_what_to_set():
    out = make("submit", env={"RAY_ADDRESS": ""})
    assert out.returncode != 0 and "set RAY_ADDRESS" in out.stderr


def test_only_the_configs_model_goes_with_the_job(tmp_path):
    """Every other folder under models/ stays home: Ray refuses a working_dir over 100 MiB (a benchmark's 229 MB
    model beside the trained one made `make submit` fail with 413)."""
    import sys

    sys.path.insert(0, "scripts")
    from submit import unused_models

    for name in ("tiny-moe-base", "bench-moe-large", "tiny-dsv3-base"):
        (tmp_path / "models" / name).mkdir(parents=True)
    assert unused_models(tmp_path, "models/tiny-moe-base") == ["models/bench-moe-large", "models/tiny-dsv3-base"]
    assert len(unused_models(tmp_path, "Qwen/Qwen3-30B-A3B")) == 3  # a hub id: no local model goes
