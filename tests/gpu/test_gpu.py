"""On GPUs (make test-gpu): a short run with the sync parity on every step, engines on their own GPU (nccl) and
colocated with the trainer (ipc, sleep mode); the sleep and wake cycle keeping the weights; TP=2 with two GPUs.
Not yet run: no machine of this project has had vLLM on a GPU."""

import json

import pytest
import torch

from rl.config import load_config
from rl.train import train

SMALL = ["trainer.steps=3", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=32",
         "data.eval_size=16", "eval.sets.heldout.size=16", "model.dtype=float32", "trainer.mixed_precision=off",
         "rollout.gpu_memory_utilization=0.3", "trainer.rank_gpus=1", "rollout.engine_gpus=1", "log.plot=false"]


def run(tmp_path, extra):
    summary = train(load_config("configs/tiny.yaml", SMALL + extra + [f"run.dir={tmp_path}"]))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"reward/mean"' in x]
    return summary, lines


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs: the engine and the trainer on their own")
def test_engine_on_its_own_gpu_syncs_by_nccl(tmp_path):
    summary, lines = run(tmp_path, ["rollout.weight_transfer=nccl"])
    assert all(m["rollout/logprob_abs_diff_max"] < 1e-3 for m in lines[1:])
    assert summary["sync_max_abs_logprob_diff"] < 1e-3


def test_colocated_engine_sleeps_and_syncs_by_ipc(tmp_path):
    summary, lines = run(tmp_path, ["cluster.colocate=true", "rollout.engine_gpus=0.5", "trainer.rank_gpus=0.5",
                                    "trainer.ranks=2", "rollout.engine_threads=0"])
    assert [m["sync/weight_version"] for m in lines] == [1, 2, 3]
    assert all(m["rollout/logprob_abs_diff_max"] < 1e-3 for m in lines[1:])  # the TRL #5312 guard: no stale weights


def test_sleep_and_wake_keep_the_weights():
    from rollout.engine import create_engine, generate_groups, sampling_params
    from rollout.types import EngineSpec, Sampling

    llm = create_engine(EngineSpec("models/tiny-moe-base", gpu_memory_utilization=0.3, sleep_mode=True))
    params = sampling_params(Sampling(4, 1.0, 1.0, 16, seed=0))
    before = generate_groups(llm, [[1, 2, 3]], [0], params)
    free = torch.cuda.mem_get_info()[0]
    llm.sleep(level=1)
    assert torch.cuda.mem_get_info()[0] > free  # the engine gave memory back
    llm.wake_up(tags=["weights"])
    llm.wake_up(tags=["kv_cache"])
    after = generate_groups(llm, [[1, 2, 3]], [0], params)
    assert [c.token_ids for c in before[0].completions] == [c.token_ids for c in after[0].completions]


@pytest.mark.skipif(torch.cuda.device_count() < 3, reason="needs 2 GPUs for a TP=2 engine and one for the trainer")
def test_tensor_parallel_engine(tmp_path):
    summary, lines = run(tmp_path, ["rollout.tensor_parallel_size=2", "rollout.engine_gpus=2"])
    assert summary["sync_max_abs_logprob_diff"] < 1e-3
