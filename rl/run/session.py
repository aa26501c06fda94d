"""Everything a run holds once set up: data, tokenizer, the trainer (in the driver or as Ray actors) and the
rollout pool, placed on the cluster as the config says.

Setup checks cheap things first (config, model path, datasets) so bad input fails before Ray starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from rl.config import Config, DataSource
from rl.data import PromptSet, concat, encode, load_prompts
from rl.data.procedural import items_of
from rl.errors import ConfigError, UserError
from rl.run.console import say
from rl.run.placement import Plan, actor_options, plan, reserve
from rl.sync.weights import make_sender
from rl.trainer.policy import load_tokenizer, resolve_model_path
from rl.trainer.rank import Trainer
from rollout.logfile import LOG_DIR_ENV
from rollout.pool import RolloutPool
from rollout.types import EngineSpec


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                        "TOKENIZERS_PARALLELISM": "false"}}
    if os.environ.get(LOG_DIR_ENV):  # a quiet run: every actor writes its output into the run's logs/
        env["env_vars"][LOG_DIR_ENV] = os.environ[LOG_DIR_ENV]
    verbose = cfg.log.verbose
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env, log_to_driver=verbose)
    else:
        # Logical CPUs only: the engines and the trainer take turns on the same cores.
        r, t = cfg.rollout, cfg.trainer
        need = math.ceil(r.num_engines * r.engine_cpus + (t.ranks * t.rank_cpus if t.ranks > 1 else 0)) + 1
        # address="local": a private instance, even when `make ray-up` left a head running on this machine
        ray.init(address="local", num_cpus=max(need, os.cpu_count() or 1), include_dashboard=False, runtime_env=env,
                 log_to_driver=verbose)


@dataclass
class Session:
    cfg: Config
    model_path: str
    tokenizer: object
    train: PromptSet  # empty for an evaluation-only session
    eval: PromptSet  # data.eval: base_accuracy / final_accuracy
    eval_sets: dict[str, PromptSet]  # eval.sets, by name
    pool: RolloutPool
    trainer: object | None = None  # rl.trainer.rank.Trainer (trainer.ranks=1) or rl.trainer.group.TrainerGroup
    placement: object | None = None
    sender: object | None = None  # the weight-transfer backend's trainer engine (rl.sync.weights.make_sender)

    @property
    def policy(self):
        """The policy module of a trainer that runs in this process."""
        if not isinstance(self.trainer, Trainer):
            raise AttributeError("the policy lives in the trainer rank actors (trainer.ranks > 1)")
        return self.trainer.policy

    @classmethod
    def start(cls, cfg: Config, trainable: bool = True, weights: str | None = None, version: int = 0,
              engines_from_base: bool = False) -> Session:
        """`weights`: a checkpoint folder (or its URI, for trainer ranks that download it on their nodes) the policy
        and the engines start from (resume), `version` its step; `engines_from_base`: the engines start from
        model.path instead and the run syncs them (LoRA, whose checkpoint holds the adapter, or a checkpoint in
        object storage); the reference model and the tokenizer always come from model.path."""
        model_path = resolve_model_path(cfg.model.path)
        cfg = resolve_lora_sync(cfg, model_path) if trainable else cfg
        tokenizer = load_tokenizer(model_path)
        train, held_out, eval_sets = load_data(cfg, tokenizer, trainable)
        longest = max(len(x) for p in (train, held_out, *eval_sets.values()) for x in p.ids)
        check_positions(model_path, longest, cfg.rollout.max_new_tokens)
        check_verifiers(cfg)
        sandbox_policy(cfg)
        backend = weight_transfer_backend(cfg)
        init_ray(cfg)
        r, t = cfg.rollout, cfg.trainer
        p = plan(r.num_engines, r.engine_cpus, r.engine_gpus, t.ranks if trainable else 1, t.rank_cpus, t.rank_gpus,
                 cfg.cluster.colocate)
        pg = reserve(p.bundles, cfg.cluster.strategy, cfg.cluster.timeout_s)
        trainer = start_trainer(cfg, weights or model_path, model_path, pg, p) if trainable else None
        spec = engine_spec(cfg, model_path if engines_from_base else weights or model_path, longest, backend)
        pool = start_pool(cfg, spec, pg, p, trainer, version, model_path)
        sender = make_sender(cfg, trainer, pool, backend) if trainable else None
        return cls(cfg, model_path, tokenizer, train, held_out, eval_sets, pool, trainer, pg, sender)

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        self.pool.shutdown()
        if hasattr(self.trainer, "shutdown"):
            self.trainer.shutdown()
        if self.placement is not None:
            remove_placement_group(self.placement)
        ray.shutdown()


def load_data(cfg: Config, tokenizer, trainable: bool) -> tuple[PromptSet, PromptSet, dict[str, PromptSet]]:
    """The training prompts, the held-out set and the eval sets, read by their formats and rendered by the
    template; data.mix's sources join data.train's rows. A procedural eval set may not share a training seed."""
    d = cfg.data

    def prompts(path: str, fmt: str, keys: dict, split: str, limit: int | None = None, source: str = "") -> PromptSet:
        rows = load_prompts(path, split, limit, fmt, keys)
        return encode([replace(r, data_source=source) for r in rows] if source else rows, tokenizer, d.template,
                      d.system_prompt)

    def read(s: DataSource) -> PromptSet:
        return prompts(s.path, s.format, s.keys, s.split, s.size or None, s.data_source)

    train = concat([prompts(d.train, d.format, d.keys, d.split), *map(read, d.mix)]) if trainable else PromptSet([], [])
    held_out = prompts(d.eval, d.format, d.keys, d.split, d.eval_size)
    sets = {name: read(e) for name, e in cfg.eval.sets.items()}
    if trainable:
        check_disjoint(d, cfg.eval.sets)
    return train, held_out, sets


def check_disjoint(d, sets: dict) -> None:
    """A procedural held-out split or eval set may not draw reasoning-gym items that a training split draws
    (rl/data/procedural.py items_of): ConfigError naming both ranges."""
    training = [(t, items_of(t)) for t in [d.train, *(m.path for m in d.mix)] if items_of(t)]
    for where, path in [("data.eval", d.eval), *((f"eval.sets.{n}.path", e.path) for n, e in sets.items())]:
        mine = items_of(path)
        for train, theirs in training:
            if mine and mine.start < theirs.stop and theirs.start < mine.stop:
                raise ConfigError(
                    f"{path} uses a training split's seed range: it draws reasoning-gym's items {mine.start}.."
                    f"{mine.stop - 1} and {train} draws {theirs.start}..{theirs.stop - 1} (item i of seed S is "
                    f"generated from seed S + i), so its problems would be trained on; use a seed of "
                    f"{theirs.stop} or more", where)


def resolve_lora_sync(cfg: Config, model_path: str) -> Config:
    """rollout.lora_sync with `auto` resolved (said at start): `adapter` where GPU engines can serve every targeted
    module with vLLM's LoRA, else `merged` (on CPU engines always: measured, vLLM-CPU decodes with an adapter
    3.8-10x slower than with merged weights, far more than the smaller sync saves; docs/lora.md); `adapter` asked
    for where the engines cannot serve it is an error saying why."""
    if not cfg.model.lora.rank:
        return cfg
    reason = adapter_unservable(cfg, model_path)
    mode = cfg.rollout.lora_sync
    if mode == "adapter" and reason:
        raise ConfigError(f"=adapter: {reason}; use rollout.lora_sync=merged (or auto)", "rollout.lora_sync")
    if mode == "auto":
        if not reason and cfg.rollout.engine_gpus == 0:
            reason = "on CPU engines merged is faster: vLLM-CPU decodes 3.8-10x slower with an adapter, make bench-lora"
        mode = "merged" if reason else "adapter"
    lo = cfg.model.lora
    say(f"lora: rank {lo.rank}, alpha {lo.alpha:g}, on {lo.target_modules}; {mode} sync"
        + (f" ({reason})" if mode == "merged" and reason else ""))
    return replace(cfg, rollout=replace(cfg.rollout, lora_sync=mode))


def adapter_unservable(cfg: Config, model_path: str) -> str:
    """Why the engines cannot apply the adapter themselves (empty: they can). vLLM-CPU 0.32 runs an MoE model's
    experts with its Triton kernel once LoRA is on, which the CPU build lacks (measured: the first forward fails);
    on GPUs, LoRA on the fused experts has not run here, so `experts` goes merged."""
    import json
    from pathlib import Path

    c = json.loads((Path(model_path) / "config.json").read_text())
    moe = any(c.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts"))
    if "experts" in cfg.model.lora.target_modules:
        return "LoRA on the fused experts is not served by the engines here"
    if moe and cfg.rollout.engine_gpus == 0:
        return "vLLM-CPU 0.32 cannot run an MoE model with LoRA on (its fused-MoE LoRA kernel needs Triton)"
    if cfg.moe.bias_update_rate > 0:
        return "the router bias moves (moe.bias_update_rate) and an adapter does not carry it"
    return ""


def reward_terms(cfg: Config) -> list:
    """Every reward term of the run: the default ones and each data source's."""
    return [*cfg.reward.terms, *(t for src in cfg.reward.sources.values() for t in src.terms)]


def check_verifiers(cfg: Config) -> None:
    """Every verifier a term names resolves here (a plug-in's module imports), before Ray and the engines start."""
    import rewards

    for t in reward_terms(cfg):
        rewards.get_verifier(t.verifier)


def sandbox_policy(cfg: Config) -> None:
    """reward.sandbox for this run's scoring workers and tool calls (they read it from the environment); with code
    rewards or the `python` tool, a machine that cannot give its min_isolation stops the run here, naming what is
    missing."""
    from rewards.code.sandbox import IsolationTooWeak, SandboxPolicy, detect_isolation, require

    sb = cfg.reward.sandbox
    pol = SandboxPolicy(sb.min_isolation, tuple(sb.packages))
    os.environ.update(pol.to_env())
    code = any(t.verifier.split("(")[0].strip() == "code" for t in reward_terms(cfg))
    if code or cfg.rollout.tools.name == "python":
        try:
            require(detect_isolation(), pol)
        except IsolationTooWeak as e:
            raise UserError(str(e)) from None


def check_positions(model_path: str, longest_prompt: int, max_new_tokens: int) -> None:
    """The engines' max_model_len is the longest prompt plus the response budget; a model with fewer positions
    (config.json's max_position_embeddings) cannot hold it: fail before any engine starts, naming both."""
    import json
    from pathlib import Path

    config = Path(model_path) / "config.json"
    c = json.loads(config.read_text())
    limit = (c.get("text_config") or c).get("max_position_embeddings")
    need = longest_prompt + max_new_tokens
    if limit is not None and need > limit:
        raise ConfigError(f"={max_new_tokens} plus the longest prompt ({longest_prompt} tokens) is {need} tokens, more than "
                          f"the model's {limit} positions (max_position_embeddings in {config}); lower "
                          f"rollout.max_new_tokens to at most {limit - longest_prompt}", "rollout.max_new_tokens")


def start_trainer(cfg: Config, policy_path: str, reference_path: str, pg, p: Plan):
    """One rank in this process, or trainer.ranks Ray actors in their placement bundles."""
    if cfg.trainer.ranks == 1:
        return Trainer(cfg, policy_path, reference_path)
    from rl.trainer.group import TrainerGroup

    return TrainerGroup(cfg, policy_path, reference_path, [actor_options(pg, b, p) for b in p.rank_bundles])


def weight_transfer_backend(cfg: Config) -> str:
    """`rollout.weight_transfer` resolved (rollout.transfer.choose_backend), and refused unless vLLM knows it."""
    from rollout.transfer import choose_backend
    from rollout.vllm_ext import engine_backends

    r, t = cfg.rollout, cfg.trainer
    backend = choose_backend(r.weight_transfer, gpus=r.engine_gpus > 0 or t.rank_gpus > 0, colocated=cfg.cluster.colocate)
    known = engine_backends()
    if backend not in known:
        raise ConfigError(f"{backend!r} is not a registered weight-transfer backend; registered: {', '.join(known)}",
                          "rollout.weight_transfer")
    return backend


def engine_dtype(cfg: Config) -> str:
    """The engines' dtype: bf16 under the trainer's bf16 mixed precision (`bf16`, or `auto` on GPUs), else the
    model's."""
    mode = cfg.trainer.mixed_precision
    return "bfloat16" if mode == "bf16" or (mode == "auto" and cfg.rollout.engine_gpus > 0) else cfg.model.dtype


def engine_spec(cfg: Config, weights: str, longest_prompt: int, backend: str) -> EngineSpec:
    """How each engine starts: in bf16 under the trainer's bf16 mixed precision (`bf16`, or `auto` on GPUs), so
    that the engines sample what a bf16 trainer computes; on GPUs, vLLM's sleep mode when colocated with the
    trainer, its own routed-experts capture, FP8 when asked."""
    r, gpu = cfg.rollout, cfg.rollout.engine_gpus > 0
    return EngineSpec(weights, dtype=engine_dtype(cfg), seed=r.seed, enforce_eager=r.enforce_eager, kv_cache_gib=r.kv_cache_gib,
                      gpu_memory_utilization=r.gpu_memory_utilization, max_model_len=longest_prompt + r.max_new_tokens,
                      threads=r.engine_threads, weight_transfer=backend, tensor_parallel_size=r.tensor_parallel_size,
                      quantization="fp8" if r.quantization == "fp8" else None, sleep_mode=gpu and cfg.cluster.colocate,
                      native_routing=gpu and r.capture_routing,
                      lora_rank=cfg.model.lora.rank if cfg.model.lora.rank and r.lora_sync == "adapter" else 0)


def start_pool(cfg: Config, spec: EngineSpec, pg, p: Plan, trainer, version: int, base_path: str) -> RolloutPool:
    """The engines in their placement bundles, holding weight version `version`; they capture routing when the
    policy is an MoE (and asked to). One restarted after a sync starts from `base_path` and loads the weights."""
    r = cfg.rollout
    top_k = (trainer.top_k() or 0) if trainer is not None and r.capture_routing else 0
    return RolloutPool(spec, actor_options=[actor_options(pg, b, p) for b in p.engine_bundles],
                       capture_routing_top_k=top_k, max_restarts=r.max_engine_restarts,
                       restart_timeout_s=cfg.cluster.timeout_s, shared_memory=r.shared_memory_sync, version=version,
                       call_timeout_s=r.call_timeout_s, base_path=base_path)
