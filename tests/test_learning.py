"""The claim of the project, as tests: RL from the base model measurably improves held-out accuracy.

Slow (about 2 minutes each on 2 cores): `make test-slow`. Same runs as the README's table.
"""

import pytest

from rl.config import load_config
from rl.train import train

pytestmark = pytest.mark.engines

RUNS = {
    "grpo": [],
    "gspo_routing_replay": ["algo.loss=gspo", "moe.routing_replay=true"],
    "dapo": ["algo.clip_high=0.28", "algo.dynamic_sampling=true", "algo.loss_agg=token_mean"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_default_run_improves_heldout_accuracy_by_ten_points(name, tmp_path):
    cfg = load_config("configs/tiny.yaml", RUNS[name] + [f"run.dir={tmp_path}", "run.save_checkpoint=false"])
    summary = train(cfg)
    assert summary["eval_problems"] >= 256
    assert 0.05 <= summary["base_accuracy"] <= 0.50  # the base model's weak prior
    assert summary["final_accuracy"] - summary["base_accuracy"] >= 0.10
    assert summary["sync_max_abs_logprob_diff"] < 1e-3
