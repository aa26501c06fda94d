"""Where rollout_efficiency goes: the same vLLM generate call in this process and inside a Ray actor.

    .venv/bin/python scripts/engine_overhead.py

Eight of the tiny default's prompts x 8 samples, 64 new tokens, a fixed sampling seed (so every call generates
the same tokens), 1 and 2 engine threads, the actor holding 1 Ray CPU as in `make train`. Prints the median
tokens/s of 8 calls after one warm-up, for each setting, and the actor/in-process ratio. Nothing else runs.
"""

from __future__ import annotations

import statistics
import time

import ray

CONFIG = "configs/tiny.yaml"


class Engine:
    def __init__(self, threads: int):
        from rl.config import load_config
        from rollout.engine import create_engine, sampling_params
        from rollout.types import EngineSpec, Sampling

        cfg = load_config(CONFIG, [])
        self.llm = create_engine(EngineSpec(cfg.model.path, dtype=cfg.model.dtype, gpu_memory_utilization=0.9,
                                            max_model_len=256, threads=threads))
        self.params = sampling_params(Sampling(8, 1.0, 1.0, 64, tuple(cfg.rollout.stop), seed=0))

    def generate(self, ids: list[list[int]]) -> tuple[float, int]:
        t = time.perf_counter()
        out = self.llm.generate([{"prompt_token_ids": x} for x in ids], self.params, use_tqdm=False)
        return time.perf_counter() - t, sum(len(c.token_ids) for o in out for c in o.outputs)


def prompts() -> list[list[int]]:
    from transformers import AutoTokenizer

    from rl.config import load_config
    from rl.data import apply_template, load_prompts

    cfg = load_config(CONFIG, [])
    tok = AutoTokenizer.from_pretrained(cfg.model.path)
    return [tok(apply_template(r.question, cfg.data.template))["input_ids"] for r in load_prompts(cfg.data.train)[:8]]


def median_rate(generate, ids: list[list[int]], repeats: int = 8) -> float:
    generate(ids)
    return statistics.median(n / t for t, n in (generate(ids) for _ in range(repeats)))


def main() -> None:
    ids = prompts()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    for threads in (1, 2):
        actor = ray.remote(Engine).options(num_cpus=1).remote(threads)
        in_actor = median_rate(lambda x, a=actor: ray.get(a.generate.remote(x)), ids)
        ray.kill(actor)
        in_process = median_rate(Engine(threads).generate, ids)  # after the actor is gone: never both at once
        print(f"threads={threads}  in process {in_process:6.0f} tok/s  in a Ray actor {in_actor:6.0f} tok/s  "
              f"ratio {in_actor / in_process:.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
