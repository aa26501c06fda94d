"""Everything a run holds once set up: data, tokenizer, the trainer (in the driver or as Ray actors) and the
rollout pool, placed on the cluster as the config says.

Setup checks cheap things first (config, model path, datasets) so bad input fails before Ray starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from rl.config import Config
from rl.data import PromptRow, apply_template, load_prompts
from rl.placement import actor_options, plan, reserve
from rl.policy import load_tokenizer, resolve_model_path
from rl.trainer import Trainer
from rollout.pool import RolloutPool


def init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                        "TOKENIZERS_PARALLELISM": "false"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env, log_to_driver=True)
    else:
        # Logical CPUs only: the engines and the trainer take turns on the same cores.
        r, t = cfg.rollout, cfg.trainer
        need = math.ceil(r.num_engines * r.engine_cpus + (t.ranks * t.rank_cpus if t.ranks > 1 else 0)) + 1
        # address="local": a private instance, even when `make ray-up` left a head running on this machine
        ray.init(address="local", num_cpus=max(need, os.cpu_count() or 1), include_dashboard=False, runtime_env=env,
                 log_to_driver=True)


@dataclass
class Session:
    cfg: Config
    model_path: str
    tokenizer: object
    train_rows: list[PromptRow]
    eval_rows: list[PromptRow]
    train_prompt_ids: list[list[int]]
    eval_prompt_ids: list[list[int]]
    pool: RolloutPool
    trainer: object | None = None  # rl.trainer.Trainer (trainer.ranks=1) or rl.trainer_group.TrainerGroup
    placement: object | None = None

    @property
    def policy(self):
        """The policy module of a trainer that runs in this process."""
        if not isinstance(self.trainer, Trainer):
            raise AttributeError("the policy lives in the trainer rank actors (trainer.ranks > 1)")
        return self.trainer.policy

    @classmethod
    def start(cls, cfg: Config, trainable: bool = True, weights: str | None = None) -> Session:
        """`weights`: a checkpoint folder the policy and the engines start from (resume); the reference model
        and the tokenizer always come from model.path."""
        from rl.trainer_group import TrainerGroup

        model_path = resolve_model_path(cfg.model.path)
        policy_path = weights or model_path
        train_rows = load_prompts(cfg.data.train, cfg.data.split) if trainable else []
        eval_rows = load_prompts(cfg.data.eval, cfg.data.split, limit=cfg.data.eval_size)
        tokenizer = load_tokenizer(model_path)

        def encode(rows):
            return [tokenizer(apply_template(r.question, cfg.data.template))["input_ids"] for r in rows]

        train_ids, eval_ids = encode(train_rows), encode(eval_rows)
        longest = max(len(x) for x in train_ids + eval_ids)
        init_ray(cfg)
        r, t = cfg.rollout, cfg.trainer
        p = plan(r.num_engines, r.engine_cpus, r.engine_gpus, t.ranks if trainable else 1, t.rank_cpus, t.rank_gpus,
                 cfg.cluster.colocate)
        pg = reserve(p.bundles, cfg.cluster.strategy, cfg.cluster.timeout_s)
        trainer = None
        if trainable and t.ranks > 1:
            trainer = TrainerGroup(cfg, policy_path, model_path, [actor_options(pg, b, p) for b in p.rank_bundles])
        elif trainable:
            trainer = Trainer(cfg, policy_path, model_path)
        top_k = (trainer.top_k() or 0) if trainer is not None and r.capture_routing else 0
        pool = RolloutPool(
            policy_path,
            actor_options=[actor_options(pg, b, p) for b in p.engine_bundles],
            capture_routing_top_k=top_k,
            max_restarts=r.max_engine_restarts,
            restart_timeout_s=cfg.cluster.timeout_s,
            shared_memory=r.shared_memory_sync,
            engine_kwargs={
                "dtype": cfg.model.dtype, "seed": r.seed, "enforce_eager": r.enforce_eager,
                "kv_cache_gib": r.kv_cache_gib, "gpu_memory_utilization": r.gpu_memory_utilization,
                "max_model_len": longest + r.max_new_tokens, "threads": r.engine_threads,
            },
        )
        return cls(cfg, model_path, tokenizer, train_rows, eval_rows, train_ids, eval_ids, pool, trainer, pg)

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        self.pool.shutdown()
        if hasattr(self.trainer, "shutdown"):
            self.trainer.shutdown()
        if self.placement is not None:
            remove_placement_group(self.placement)
        ray.shutdown()
