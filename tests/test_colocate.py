"""cluster.colocate on CPU: engines and trainer ranks share placement bundles, and every step goes through the
colocation path of vLLM's sleep mode (sleep before the trainer works, wake the weights for the sync, then the KV
cache). vLLM's CPU worker ignores sleep (with a warning), so here it proves the path runs and syncs exactly."""

import json

import pytest

from rl.config import load_config
from rl.train import train

pytestmark = pytest.mark.engines


def test_colocated_run_sleeps_and_wakes_the_engine_every_step_and_stays_in_sync(tmp_path):
    cfg = load_config("configs/tiny.yaml", [
        "cluster.colocate=true", "trainer.ranks=2", "rollout.engine_threads=1", "trainer.steps=2",
        "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32", "run.eval_before=false",
        "run.eval_after=false", "run.save_checkpoint=false", "log.plot=false", f"run.dir={tmp_path}"])
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["sync/weight_version"] for m in lines] == [1, 2]
    assert lines[1]["rollout/logprob_abs_diff_max"] < 1e-3 and summary["sync_max_abs_logprob_diff"] < 1e-3
    engine_log = (tmp_path / "logs" / "engine-0.log").read_text()
    assert engine_log.count("sleep mode is not supported on CPU") >= 2 * 3  # sleep and two wake-ups, each step
