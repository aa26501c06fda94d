"""rollout.async: step k+1's groups are generated while step k trains. Real Ray + vLLM run of 3 steps."""

import json

import pytest
import torch

from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.train import train

pytestmark = pytest.mark.engines

ARGS = ["rollout.async=true", "trainer.steps=3", "trainer.prompts_per_step=4", "rollout.n=4",
        "rollout.max_new_tokens=32", "run.eval_before=false", "run.eval_after=false", "run.save_every=1",
        "run.keep_last=3", "run.save_checkpoint=false"]


def test_async_is_one_step_off_policy_and_loses_no_prompt(tmp_path):
    cfg = load_config("configs/tiny.yaml", ARGS + [f"run.dir={tmp_path}"])
    summary = train(cfg)
    got = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout/staleness"] for m in got] == [0, 1, 1]
    # the prompts are those a synchronous run draws, in the same order (the cursor is drawn from the same sampler)
    sampler = EpochSampler(sum(1 for _ in open(cfg.data.train)), cfg.data.seed)  # a row's index is its line
    assert [m["data/indices"] for m in got] == [sampler.next(4) for _ in range(3)]
    # a checkpoint taken while the next round was in flight records the cursor without it: resume redraws them
    for step in (1, 2, 3):
        state = torch.load(tmp_path / "checkpoints" / f"step-{step:06d}" / "train_state.pt", weights_only=False)
        assert state["sampler"]["pos"] == 4 * step
    assert summary["sync_max_abs_logprob_diff"] < 1e-3  # the last sync still lands exactly
