"""Everything a run holds once set up: data, tokenizer, policy, reference and the rollout pool.

Setup checks cheap things first (config, model path, datasets) so bad input fails before Ray starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from rl.config import Config
from rl.data import PromptRow, apply_template, load_prompts
from rl.moe import freeze_router, top_k_of
from rl.policy import load_policy, load_tokenizer, resolve_model_path
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
        need = math.ceil(cfg.rollout.num_engines * cfg.rollout.engine_cpus) + 1
        ray.init(num_cpus=max(need, os.cpu_count() or 1), include_dashboard=False, runtime_env=env, log_to_driver=True)


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
    policy: object | None = None
    reference: object | None = None

    @classmethod
    def start(cls, cfg: Config, trainable: bool = True, weights: str | None = None) -> Session:
        """`weights`: a checkpoint folder the policy and the engines start from (resume); the reference model
        and the tokenizer always come from model.path."""
        model_path = resolve_model_path(cfg.model.path)
        policy_path = weights or model_path
        train_rows = load_prompts(cfg.data.train, cfg.data.split) if trainable else []
        eval_rows = load_prompts(cfg.data.eval, cfg.data.split, limit=cfg.data.eval_size)
        tokenizer = load_tokenizer(model_path)

        def encode(rows):
            return [tokenizer(apply_template(r.question, cfg.data.template))["input_ids"] for r in rows]

        policy = load_policy(policy_path, cfg.model.dtype) if trainable else None
        if policy is not None and cfg.moe.freeze_router:
            freeze_router(policy)
        reference = load_policy(model_path, cfg.model.dtype, trainable=False) if trainable and cfg.algo.kl_coef > 0 else None
        train_ids, eval_ids = encode(train_rows), encode(eval_rows)
        longest = max(len(x) for x in train_ids + eval_ids)
        init_ray(cfg)
        r = cfg.rollout
        pool = RolloutPool(
            policy_path,
            num_engines=r.num_engines,
            engine_cpus=r.engine_cpus,
            capture_routing_top_k=(top_k_of(policy) or 0) if policy is not None and r.capture_routing else 0,
            engine_kwargs={
                "dtype": cfg.model.dtype, "seed": r.seed, "enforce_eager": r.enforce_eager,
                "kv_cache_gib": r.kv_cache_gib, "gpu_memory_utilization": r.gpu_memory_utilization,
                "max_model_len": longest + r.max_new_tokens,
            },
        )
        return cls(cfg, model_path, tokenizer, train_rows, eval_rows, train_ids, eval_ids, pool, policy, reference)

    def close(self) -> None:
        import ray

        self.pool.shutdown()
        ray.shutdown()
