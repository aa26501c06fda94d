"""The GPU planner (rl/run/plan.py) on hand-worked cases, and `--dry-run` on every GPU config of configs/."""

import json
from pathlib import Path

import pytest

from rl.config import load_config
from rl.run.plan import (
    GIB,
    GPU,
    Cluster,
    Lora,
    MicroBatch,
    PlanError,
    adapter_params,
    engine_gib,
    fit,
    kv_tokens,
    logits_bytes,
    longest_response,
    model_shape,
    parse_cluster,
    peak,
    place,
    read_model_config,
    trainer_gib,
)

GPU_CONFIGS = ["qwen3-30b-a3b-8xh100", "qwen3-30b-a3b-2x8xh100", "olmoe-1b-7b-1xh200", "qwen2.5-math-1.5b-1gpu",
               "qwen3-30b-a3b-lora-1xh100", "qwen2.5-math-1.5b-torl-1gpu"]


@pytest.mark.parametrize("name,published,active", [("qwen3-30b-a3b", 30.5e9, 3.3e9), ("qwen2.5-math-1.5b", 1.54e9, None),
                                                   ("olmoe-1b-7b-0924", 6.9e9, 1.3e9)])
def test_parameter_counts_match_the_published_sizes(name, published, active):
    shape = model_shape(json.loads(Path(f"configs/models/{name}.json").read_text()))
    assert shape.params == pytest.approx(published, rel=0.01)
    if active:
        assert shape.active_params == pytest.approx(active, rel=0.03)


def test_qwen3_moe_count_by_hand():
    c = json.loads(Path("configs/models/qwen3-30b-a3b.json").read_text())
    attn = 2048 * (4096 + 2 * 512) + 4096 * 2048 + 2 * 128  # q, k, v, o, q/k norms
    moe = 128 * 3 * 2048 * 768 + 2048 * 128  # experts and the router
    assert model_shape(c).params == 48 * (attn + moe + 2 * 2048) + 2 * 151936 * 2048 + 2048
    assert model_shape(c).kv_bytes_per_token == 2 * 48 * 4 * 128 * 2  # K and V, 48 layers, 4 KV heads, bf16: 96 KiB


def test_parse_cluster():
    assert parse_cluster("2x8xH100-80GB") == Cluster(2, 8, "H100-80GB", 80)
    assert parse_cluster("1x4xMI300X-192GB").memory_gib == 192  # an unlisted GPU: its memory from the name
    with pytest.raises(PlanError, match="nodes>x<gpus per node>"):
        parse_cluster("8 H100s")


def test_trainer_and_engine_memory_by_hand():
    shape = model_shape({"hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 4096,
                         "vocab_size": 32000, "tie_word_embeddings": True})
    p = shape.params  # 8 x (4 x 1024^2 + 3 x 1024 x 4096 + 2 x 1024) + 32000 x 1024 + 1024 = 167,789,568
    assert p == 8 * (4 * 1024**2 + 3 * 1024 * 4096 + 2048) + 32000 * 1024 + 1024
    t = trainer_gib(shape, ranks=4, sharded=True, mb=MicroBatch(1000, checkpointing=True), reference=True)
    assert t["weights (fp32)"] == pytest.approx(4 * p / 4 / GIB) and t["optimizer state (Adam, fp32)"] == pytest.approx(2 * p / GIB)
    assert t["reference (bf16)"] == pytest.approx(2 * p / 4 / GIB)
    assert t["logits and log-softmax"] == pytest.approx(1000 * 32000 * 10 / GIB)  # bf16 logits + fp32 log-softmax + grad
    assert t["activations"] == pytest.approx(2 * 1000 * (1024 * 8 + shape.activation_width) / GIB)  # checkpointed
    full = trainer_gib(shape, ranks=4, sharded=False, mb=MicroBatch(1000), reference=False)
    assert full["weights (fp32)"] == pytest.approx(4 * p / GIB) and "gathered layers (bf16)" not in full
    e = engine_gib(shape, tp=2, memory_gib=80, utilization=0.5, fp8=False)
    assert e["weights"] == pytest.approx(p / GIB) and e["KV cache"] == pytest.approx(40 - p / GIB - 1.5)
    assert engine_gib(shape, 2, 80, 0.5, fp8=True)["weights"] == pytest.approx(p / 2 / GIB)
    assert kv_tokens(shape, 2, 1.0) == int(GIB * 2 / (2 * 8 * 8 * 128 * 2))  # 1 GiB per GPU, TP 2, 32 KiB a token


def test_lora_counts_adapter_state_and_no_reference():
    c = json.loads(Path("configs/models/qwen3-30b-a3b.json").read_text())
    per_layer = 32 * ((2048 + 4096) + (2048 + 512) + (2048 + 512) + (4096 + 2048))  # q, k, v, o: r x (in + out)
    assert adapter_params(c, 32, ["all-linear"]) == 48 * per_layer
    assert adapter_params(c, 32, ["q_proj"]) == 48 * 32 * (2048 + 4096)
    experts = adapter_params(c, 1, ["experts"])
    assert experts == 48 * 128 * ((2048 + 2 * 768) + (768 + 2048))  # gate_up and down of each of 128 experts
    shape = model_shape(c)
    t = trainer_gib(shape, 1, False, MicroBatch(1000), reference=True, lora=Lora(48 * per_layer, base_bytes=2))
    assert t["frozen base"] == pytest.approx(2 * shape.params / GIB)
    assert t["adapters, gradients, Adam (fp32)"] == pytest.approx(16 * 48 * per_layer / GIB)
    assert "reference (bf16)" not in t and "optimizer state (Adam, fp32)" not in t


def test_chunked_logits_cost_one_chunk_whatever_the_length():
    shape = model_shape({"hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 4096,
                         "vocab_size": 32000})
    chunk = 512 * 32000 * (8 + 4) + 4 * 32000 * 1024  # 2 fp32 and 2 bf16 buffers of one chunk; fp32 head gradient
    for tokens in (4096, 40960):
        got = logits_bytes(shape, tokens, 512, 2)["logits (one chunk)"]
        assert got == chunk + tokens * (2 * 1024 + 8)  # + per token its hidden state and log-normaliser
    assert logits_bytes(shape, 40960, 0, 2)["logits and log-softmax"] == 40960 * 32000 * 10  # 12 GiB materialized


def test_longest_response_is_the_last_length_that_fits():
    fits = lambda tokens: tokens <= 20_000  # noqa: E731 - a rank that holds 20k tokens
    assert longest_response(fits, prompt_tokens=500, budget=8192) == 19_500
    assert longest_response(lambda tokens: False, 500, 8192) == 0


def test_a_response_budget_past_the_positions_is_refused(capsys):
    from rl.train import main

    code = main(["--config", "configs/qwen2.5-math-1.5b-1gpu.yaml", "--dry-run", "rollout.max_new_tokens=4096"])
    assert code == 2
    assert "4608 tokens, more than the model's 4096 positions" in capsys.readouterr().err


def test_peak_colocated_is_the_larger_phase():
    parts = {"rank 0 weights": 30.0, "engine 0 weights": 10.0, "engine 0 KV cache": 40.0}
    assert peak(parts, ["rank 0 weights"], ["engine 0 weights", "engine 0 KV cache"], sleeps=True)[0] == 50.0 + 1.5
    assert peak(parts, ["rank 0 weights"], ["engine 0 weights", "engine 0 KV cache"], sleeps=False)[0] == 80.0 + 1.5


def test_place_split_colocated_and_too_small():
    two_nodes = Cluster(2, 4, "H100-80GB", 80)
    split = place(two_nodes, engines=2, tp=2, ranks=4, colocate=False)
    assert split.engines == [[(0, 0), (0, 1)], [(0, 2), (0, 3)]] and split.ranks == [(1, 0), (1, 1), (1, 2), (1, 3)]
    co = place(Cluster(1, 4, "H100-80GB", 80), engines=2, tp=2, ranks=4, colocate=True)
    assert co.ranks == [(0, 0), (0, 1), (0, 2), (0, 3)]
    with pytest.raises(PlanError, match="needs 8 GPUs .* the cluster has 4"):
        place(Cluster(1, 4, "H100-80GB", 80), engines=2, tp=2, ranks=4, colocate=False)
    with pytest.raises(PlanError, match="no node has 4 free GPUs"):
        place(Cluster(2, 2, "H100-80GB", 80), engines=1, tp=4, ranks=0, colocate=False)


def test_fit_names_the_gpu_and_the_numbers():
    g = GPU(0, 3, {"rank 3 weights (fp32)": 70.0, "rank 3 activations": 20.0}, 91.5, "")
    with pytest.raises(PlanError, match=r"node 0 GPU 3 needs 91.5 GiB of 80 GiB: rank 3 weights \(fp32\) 70.0"):
        fit([g], 80)
    starved = GPU(0, 0, {"engine 0 weights": 60.0, "engine 0 runtime": 1.5, "engine 0 KV cache": -5.0}, 57.0, "")
    with pytest.raises(PlanError, match="raise rollout.gpu_memory_utilization or rollout.tensor_parallel_size"):
        fit([starved], 80)


def test_model_config_of_a_hub_id_comes_from_configs_models():
    assert read_model_config("Qwen/Qwen3-30B-A3B")["num_experts"] == 128
    assert read_model_config("models/tiny-moe-base")["hidden_size"] == 128  # a local folder's own
    with pytest.raises(PlanError, match="no config.json found"):
        read_model_config("someone/unknown-model")


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_dry_run_passes_for_every_gpu_config(name, capsys):
    from rl.train import main

    assert main(["--config", f"configs/{name}.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: ") and "fits: the fullest GPU peaks at" in out and "node 0 GPU 0" in out
    assert "the longest response it can train: " in out
    if name.endswith("torl-1gpu"):  # the tool's share of the answer budget and the sandbox's load
        assert ("tools: python, up to 4 calls an answer, each output cut to 512 tokens: at most 2,048 of the "
                "3,072-token answer budget") in out and "16 sandboxed calls at once per engine" in out


def test_an_oversized_run_fails_naming_the_resource(capsys):
    from rl.train import main

    code = main(["--config", "configs/qwen3-30b-a3b-8xh100.yaml", "--dry-run", "cluster.declared=1x8xH100-40GB"])
    assert code == 2
    err = capsys.readouterr().err
    assert "node 0 GPU 0 needs" in err and "of 40 GiB" in err and "optimizer state" in err


def test_gpu_configs_load_and_name_their_memory_plan():
    for name in GPU_CONFIGS:
        cfg = load_config(f"configs/{name}.yaml")
        head = Path(f"configs/{name}.yaml").read_text().splitlines()[:10]
        assert any("make plan" in x for x in head) and any("Memory plan" in x for x in head), name
        assert cfg.cluster.declared and cfg.trainer.rank_gpus > 0
