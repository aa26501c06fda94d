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
    Lora,
    MicroBatch,
    PlanError,
    adapter_params,
    engine_gib,
    fit,
    kv_tokens,
    longest_response,
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


def micro_batch_tokens(cfg: Config, prompt_tokens: int) -> int:
    """Tokens of the trainer's largest micro-batch: the token budget (or one sequence past it), or
    trainer.micro_batch_size sequences of the longest prompt and response."""
    t, longest = cfg.trainer, prompt_tokens + cfg.rollout.max_new_tokens
    return max(t.max_tokens_per_micro_batch, longest) if t.max_tokens_per_micro_batch else t.micro_batch_size * longest


def plan_gpus(cfg: Config, cluster: Cluster, config: dict, tokens: int) -> tuple[list[GPU], Layout]:
    """Every GPU of the cluster and its share of the engines and trainer ranks (the model's config.json `config`),
    with micro-batches of `tokens`."""
    shape = model_shape(config)
    r, t = cfg.rollout, cfg.trainer
    ranks = t.ranks if t.ranks > 1 or t.rank_gpus > 0 else 0  # one rank on the CPU trains in the driver, off the GPUs
    layout = place(cluster, r.num_engines, r.tensor_parallel_size, ranks, cfg.cluster.colocate)
    gpus = {(n, i): GPU(n, i) for n in range(cluster.nodes) for i in range(cluster.gpus_per_node)}
    mb = MicroBatch(tokens, t.activation_checkpointing, t.logprob_chunk_tokens)
    lo = cfg.model.lora
    lora = Lora(adapter_params(config, lo.rank, lo.target_modules), 4 if cfg.model.dtype == "float32" else 2) \
        if lo.rank else None
    mine = trainer_gib(shape, max(ranks, 1), t.sharding == "fsdp", mb, cfg.algo.kl_coef > 0, lora)
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


def trainer_line(cfg: Config, cluster: Cluster, config: dict, prompt_tokens: int, layout: Layout) -> str:
    """The trainer's micro-batches and the longest response it can train on this cluster."""
    t, tokens = cfg.trainer, micro_batch_tokens(cfg, prompt_tokens)
    head = f"logits {t.logprob_chunk_tokens} tokens at a time" if t.logprob_chunk_tokens else "materialized logits"
    line = f"trainer: micro-batches of up to {tokens:,} tokens, {head}"
    if not layout.ranks:
        return line + " (on the CPU)"

    def fits(n: int) -> bool:
        return max(g.peak_gib for g in plan_gpus(cfg, cluster, config, n)[0]) <= cluster.memory_gib

    longest = longest_response(fits, prompt_tokens, t.max_tokens_per_micro_batch)
    positions = model_shape(config).positions
    room = positions - prompt_tokens if positions else None
    if room is not None and room < longest:
        return line + f"; the longest response it can train: {room:,} tokens (the model's positions; memory holds {longest:,})"
    return line + f"; the longest response it can train: {longest:,} tokens (memory)"


def tools_line(cfg: Config) -> str:
    """rollout.tools: the tool tokens' share of the answer budget and the sandbox's load per engine."""
    r, t = cfg.rollout, cfg.rollout.tools
    most = min(t.max_calls * t.max_output_tokens, r.max_new_tokens)
    return (f"tools: {t.name}, up to {t.max_calls} calls an answer, each output cut to {t.max_output_tokens} tokens: "
            f"at most {most:,} of the {r.max_new_tokens:,}-token answer budget are tool output (context, not trained "
            f"on); {t.concurrency} sandboxed calls at once per engine, each {t.timeout_s:g} s wall, {t.cpu_s} s CPU, "
            f"{t.memory_mb} MiB (up to {t.concurrency * t.memory_mb / 1024:g} GiB of host memory per engine)")


def check_positions(cfg: Config, shape, prompt_tokens: int) -> None:
    """The engines' max_model_len (prompt + response budget) must fit the model's positions."""
    need = prompt_tokens + cfg.rollout.max_new_tokens
    if shape.positions and need > shape.positions:
        raise PlanError(f"rollout.max_new_tokens={cfg.rollout.max_new_tokens} plus the prompts (~{prompt_tokens} tokens) "
                        f"is {need} tokens, more than the model's {shape.positions} positions (max_position_embeddings)")


def dry_run(cfg: Config) -> None:
    """Prints the plan; PlanError (a UserError: exit 2) when the run cannot fit."""
    config = read_model_config(cfg.model.path)
    shape = model_shape(config)
    cluster = parse_cluster(cfg.cluster.declared) if cfg.cluster.declared else running_cluster()
    note, prompt_tokens = dataset_note(cfg)
    check_positions(cfg, shape, prompt_tokens)
    gpus, layout = plan_gpus(cfg, cluster, config, micro_batch_tokens(cfg, prompt_tokens))
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
    say(trainer_line(cfg, cluster, config, prompt_tokens, layout))
    if r.tools.name:
        say(tools_line(cfg))
    if cfg.model.lora.rank:
        lo = cfg.model.lora
        say(f"lora: rank {lo.rank} on {lo.target_modules}: {adapter_params(config, lo.rank, lo.target_modules) / 1e6:.1f} M "
            f"adapter parameters (optimizer state on these only; the reference is the base with them off)")
    for line in summary_lines(gpus, cluster.memory_gib):
        say(line)
    fit(gpus, cluster.memory_gib)
    say(f"fits: the fullest GPU peaks at {max(g.peak_gib for g in gpus):.1f} of {cluster.memory_gib:g} GiB")
