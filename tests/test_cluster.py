"""Multi-node on one machine: a simulated 3-node Ray cluster (ray.cluster_utils.Cluster) holds 2 engines on
different nodes and 2 trainer ranks; 3 steps train, and an engine on a node other than the driver's matches the
trainer's logprobs after the sync."""

import pytest
import ray
from ray.cluster_utils import Cluster

from rl.collect.collector import Collector
from rl.collect.generate import sampling
from rl.config import load_config
from rl.data.sampler import EpochSampler
from rl.run.heal import TrainerHealer
from rl.run.session import Session
from rl.train import rl_step

pytestmark = pytest.mark.engines

ARGS = ["rollout.num_engines=2", "rollout.engine_threads=1", "trainer.ranks=2", "cluster.strategy=SPREAD", "trainer.prompts_per_step=4",
        "rollout.n=4", "rollout.max_new_tokens=32", "data.eval_size=16", "trainer.micro_batch_size=8",
        "trainer.lr=1e-3", "algo.kl_coef=0"]


def test_three_nodes_two_engines_two_ranks(tmp_path, monkeypatch):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # the path a run on an existing cluster takes
    cfg = load_config("configs/tiny.yaml", ARGS + [f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        driver_node = ray.get_runtime_context().get_node_id()
        assert len(set(s.pool.node_ids)) == 2, "the engines share a node"
        assert len(s.trainer.node_ids) == 2
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), cfg.data.seed))
        steps = [rl_step(s, collector, step) for step in (1, 2, 3)]
        assert all(m["optimizer_steps"] == 1 for m in steps)
        for m in steps:  # 16 answers over 2 ranks by tokens: nearly even; the busiest rank's RSS peak
            assert 1.0 <= m["trainer/token_imbalance"] < 1.1 and m["trainer/micro_batches"] >= 1
            assert 0.1 < m["trainer/peak_memory_gib"] < 20
        # steps 2 and 3 sampled from synced weights: the ranks' logprobs match both engines' on those samples
        assert max(m["rollout/logprob_abs_diff_max"] for m in steps[1:]) < 1e-3
        remote = [i for i, n in enumerate(s.pool.node_ids) if n != driver_node]
        assert remote, "no engine on a remote node"
        groups = ray.get(s.pool.workers[remote[0]].generate.remote(s.eval.head(4).ids, [0, 1, 2, 3],
                                                                   sampling(cfg.rollout, 4)))
        assert s.trainer.sync_gap(groups, s.tokenizer.pad_token_id)["max"] < 1e-3
    finally:
        s.close()
        cluster.shutdown()


def node_of(cluster, node_id):
    return next(n for n in cluster.list_all_nodes() if n.node_id == node_id)


@pytest.mark.slow  # make test: tests/test_faults.py restarts a killed engine; test_three_nodes_... places over nodes
def test_removed_node_engine_is_recreated_elsewhere(tmp_path, monkeypatch):
    """Engine 1's node goes away; a spare node can hold it, so it restarts there and the round completes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    cfg = load_config("configs/tiny.yaml", ["rollout.num_engines=2", "rollout.engine_threads=1", "cluster.strategy=SPREAD", "data.eval_size=16",
                                            f"run.dir={tmp_path}"])
    s = Session.start(cfg, trainable=False)
    try:
        lost = s.pool.node_ids[1]
        cluster.remove_node(node_of(cluster, lost), allow_graceful=False)
        groups = s.pool.generate(s.eval.ids, s.eval.indices(), sampling(cfg.rollout, 2))
        assert [g.prompt_index for g in groups] == s.eval.indices()
        assert s.pool.restarts == 1
        moved_to = ray.get(s.pool.workers[1].node_id.remote())
        assert moved_to not in (lost, s.pool.node_ids[0])
    finally:
        s.close()
        cluster.shutdown()


def test_no_room_after_node_loss_stops_with_checkpoint(tmp_path, monkeypatch):
    """The only engine's node goes away after step 1 and nothing can hold it: the run stops with EngineLost,
    a checkpoint of the last finished (logged) step and a message saying how to continue. Ray notices the dead
    node a little later, during step 2's generation or its sync, so that last step is 1 or 2."""
    import threading
    import time

    import pytest

    from rl.train import train
    from rl.trainer.checkpoint import complete_checkpoints
    from rollout.pool import EngineLost

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    engine_node = cluster.add_node(num_cpus=1)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    run_dir = tmp_path / "run"
    cfg = load_config("configs/tiny.yaml", ARGS[3:] + ["trainer.steps=4", "run.eval_before=false",
                                                       "run.eval_after=false", "cluster.timeout_s=20",
                                                       f"run.dir={run_dir}"])

    def remove_after_step_1():
        log = run_dir / "metrics.jsonl"
        while not (log.exists() and log.read_text().count("\n") >= 1):  # step 1 is logged
            time.sleep(0.05)
        cluster.remove_node(engine_node, allow_graceful=False)

    remover = threading.Thread(target=remove_after_step_1, daemon=True)
    remover.start()
    try:
        with pytest.raises(EngineLost, match=r"Checkpoint of step (1|2): .*RESUME=1") as err:
            train(cfg)
    finally:
        cluster.shutdown()
    logged = (run_dir / "metrics.jsonl").read_text().count("\n")
    assert f"Checkpoint of step {logged}:" in str(err.value)
    assert [p.name for p in complete_checkpoints(run_dir)] == [f"step-{logged:06d}"]


def test_a_trainer_rank_whose_node_is_removed_is_rebuilt_on_another(tmp_path, monkeypatch):
    """Rank 1's node goes away after step 1. The group is rebuilt from the state copy the driver holds in memory
    (nothing is written where the ranks could read it), rank 1 lands on the spare node, and step 2 is trained."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(4):  # the engine, two ranks, a spare
        cluster.add_node(num_cpus=1)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    cfg = load_config("configs/tiny.yaml", ARGS + ["rollout.num_engines=1", "run.eval_before=false",
                                                  f"run.dir={tmp_path}"])
    s = Session.start(cfg)
    try:
        healer = TrainerHealer(s.trainer, cfg)
        healer.start()
        collector = Collector(cfg, s.pool, s.train, EpochSampler(len(s.train), cfg.data.seed))
        rl_step(s, collector, 1, healer=healer)
        lost, kept = s.trainer.node_ids[1], s.trainer.node_ids[0]
        cluster.remove_node(node_of(cluster, lost), allow_graceful=False)
        second = rl_step(s, collector, 2, healer=healer)
        assert second["run/restarts/trainer_died"] == 1 and second["optimizer_steps"] == 1
        assert s.trainer.node_ids[1] not in (lost, kept, s.pool.node_ids[0])
        assert 0 < second["run/trainer_state_copy_gib"] < 0.1
        third = rl_step(s, collector, 3, healer=healer)  # sampled from the rebuilt group's synced weights
        assert third["rollout/logprob_abs_diff_max"] < 1e-3
        assert not list(tmp_path.rglob("*.safetensors")), "the state copy was written to disk"
    finally:
        s.close()
        cluster.shutdown()
