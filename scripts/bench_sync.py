"""The weight sync alone, split into its parts: `make bench-sync` (ARGS are config overrides).

Starts the tiny default's session (one engine), then syncs the unchanged policy 12 times and prints the medians
of the last 10, in ms: converting to checkpoint names, the pool's update (packing, transfer, every engine's load)
and the engine's own load inside it. Compare `rollout.shared_memory_sync=false` against the default.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from rl.config import load_config
from rl.run.session import Session
from rl.trainer.export import checkpoint_tensors


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config("configs/tiny.yaml", [f"run.dir={run_dir}", "run.eval_before=false", *overrides])
        s = Session.start(cfg)
        try:
            rows: dict[str, list[float]] = {"names": [], "pool_update": [], "engine_load": [], "total": []}
            for _ in range(12):
                t0 = time.perf_counter()
                items = checkpoint_tensors(s.trainer.policy)
                t1 = time.perf_counter()
                engine = s.pool.update_weights(items)
                t2 = time.perf_counter()
                for key, v in zip(rows, (t1 - t0, t2 - t1, engine, t2 - t0)):
                    rows[key].append(v)
        finally:
            s.close()
    print(" ".join(overrides) or "defaults", {k: round(statistics.median(v[2:]) * 1e3, 1) for k, v in rows.items()}, "ms")


if __name__ == "__main__":
    main(sys.argv[1:])
