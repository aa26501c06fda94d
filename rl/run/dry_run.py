"""`python -m rl.train --config X --dry-run` (`make plan CONFIG=X`): the run checked and placed with no GPU and no
weights; prints the plan and each GPU's memory, or fails naming what does not fit (rl/run/plan.py)."""

from __future__ import annotations

from pathlib import Path

from rl.config import Config
from rl.run.console import say
from rl.run.plan import (
    GPU,
    Cluster,
    Layout,
    PlanError,
    engine_gib,
    fit,
    kv_tokens,
    model_shape,
    parse_cluster,
    peak,
    place,
    read_model_config,
    summary_lines,
    trainer_gib,
)

PROMPT_TOKENS = 512  # the prompt budget assumed when the dataset is not on this machine to measure


def dataset_note(cfg: Config) -> tuple[str, int]:
    """The training data's schema as read (its format's fields on the first rows), and the longest prompt in
    tokens (estimated at 3.5 characters a token, as the tokenizer may not be here)."""
    from rl.data import load_prompts

    path = cfg.data.train
    if not path.startswith("reasoning_gym:") and not Path(path).exists():
        return f"{path}: not on this machine (the plan assumes prompts of {PROMPT_TOKENS} tokens)", PROMPT_TOKENS
    rows = load_prompts(path, cfg.data.split, 64, cfg.data.format, cfg.data.keys)
    longest = max(len(r.question) for r in rows)
    return (f"{path}: {cfg.data.format} rows read (first 64; sources {sorted({r.data_source for r in rows})}), "
            f"longest prompt ~{int(longest / 3.5)} tokens"), max(int(longest / 3.5), 16)


def running_cluster() -> Cluster:
    """The Ray cluster at RAY_ADDRESS, as a Cluster: its GPU nodes must all be alike, and their memory known."""
    import ray
    import torch

    ray.init(address="auto", include_dashboard=False, log_to_driver=False)
    nodes = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    ray.shutdown()
    if not nodes or not torch.cuda.is_available():
        raise PlanError("no GPU seen here: declare the cluster the run is for (cluster.declared=2x8xH100-80GB)")
    memory = torch.cuda.get_device_properties(0).total_memory / (1 << 30)
    return Cluster(len(nodes), int(min(nodes)), torch.cuda.get_device_name(0), memory)


def plan_gpus(cfg: Config, cluster: Cluster, shape, prompt_tokens: int) -> tuple[list[GPU], Layout]:
    """Every GPU of the cluster and its share of the engines and trainer ranks."""
    r, t = cfg.rollout, cfg.trainer
    ranks = t.ranks if t.ranks > 1 or t.rank_gpus > 0 else 0  # one rank on the CPU trains in the driver, off the GPUs
    layout = place(cluster, r.num_engines, r.tensor_parallel_size, ranks, cfg.cluster.colocate)
    gpus = {(n, i): GPU(n, i) for n in range(cluster.nodes) for i in range(cluster.gpus_per_node)}
    tokens = t.micro_batch_size * (prompt_tokens + r.max_new_tokens)
    mine = trainer_gib(shape, max(ranks, 1), t.sharding == "fsdp", tokens, t.activation_checkpointing,
                       cfg.algo.kl_coef > 0)
    for k, g in enumerate(layout.ranks):
        gpus[g].parts |= {f"rank {k} {name}": v for name, v in mine.items()}
    engine = engine_gib(shape, r.tensor_parallel_size, cluster.memory_gib, r.gpu_memory_utilization,
                        r.quantization == "fp8")
    for e, held in enumerate(layout.engines):
        for g in held:
            gpus[g].parts |= {f"engine {e} {name}": v for name, v in engine.items()}
    for g in gpus.values():
        trainer_keys = [k for k in g.parts if k.startswith("rank")]
        engine_keys = [k for k in g.parts if k.startswith("engine")]
        g.peak_gib, g.note = peak(g.parts, trainer_keys, engine_keys, sleeps=cfg.cluster.colocate)
    return list(gpus.values()), layout


def dry_run(cfg: Config) -> None:
    """Prints the plan; PlanError (a UserError: exit 2) when the run cannot fit."""
    shape = model_shape(read_model_config(cfg.model.path))
    cluster = parse_cluster(cfg.cluster.declared) if cfg.cluster.declared else running_cluster()
    note, prompt_tokens = dataset_note(cfg)
    gpus, layout = plan_gpus(cfg, cluster, shape, prompt_tokens)
    r = cfg.rollout
    say(f"plan: {cfg.model.path}: {shape.params / 1e9:.2f} B parameters ({shape.active_params / 1e9:.2f} B active), "
        f"{shape.layers} layers, KV {shape.kv_bytes_per_token / 1024:.0f} KiB per token")
    say(f"data: {note}")
    say(f"cluster: {cluster.nodes} node(s) x {cluster.gpus_per_node} {cluster.gpu} ({cluster.memory_gib:g} GiB); "
        f"{r.num_engines} engine(s) x tensor_parallel_size {r.tensor_parallel_size} on {layout.engines}; "
        f"{len(layout.ranks)} trainer rank(s) ({cfg.trainer.sharding}) on {layout.ranks}"
        + ("; colocated (engines sleep while the trainer works)" if cfg.cluster.colocate else ""))
    kv = next((v for g in gpus for k, v in g.parts.items() if k.endswith("KV cache")), 0.0)
    say(f"engines: KV cache {kv:.1f} GiB per GPU = {kv_tokens(shape, r.tensor_parallel_size, kv):,} tokens per engine "
        f"({r.n} x {r.max_new_tokens} new tokens per prompt)")
    for line in summary_lines(gpus, cluster.memory_gib):
        say(line)
    fit(gpus, cluster.memory_gib)
    say(f"fits: the fullest GPU peaks at {max(g.peak_gib for g in gpus):.1f} of {cluster.memory_gib:g} GiB")
