"""The weight sync alone, split into its parts: `make bench-sync` (ARGS are config overrides).

Starts the tiny default's session (one engine), then syncs the unchanged policy 12 times through vLLM's
weight-transfer lifecycle and prints the medians of the last 10, in ms: converting to checkpoint names, then the
pool's three calls (start; update: packing, transfer, staging; finish: every engine's load, its version check)
and the engine's own load inside finish. Compare `rollout.shared_memory_sync=false` against the default.
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
            keys = ["names", "start", "update", "finish", "engine_load", "total"]
            rows: dict[str, list[float]] = {k: [] for k in keys}
            for version in range(1, 13):
                t = [time.perf_counter()]
                items = checkpoint_tensors(s.trainer.policy)
                t.append(time.perf_counter())
                s.pool.start_weight_update()
                t.append(time.perf_counter())
                s.pool.update_weights({"items": items})
                t.append(time.perf_counter())
                s.pool.finish_weight_update(str(version))
                t.append(time.perf_counter())
                for key, v in zip(keys, [b - a for a, b in zip(t, t[1:])] + [s.pool.load_s, t[-1] - t[0]]):
                    rows[key].append(v)
        finally:
            s.close()
    print(" ".join(overrides) or "defaults", {k: round(statistics.median(v[2:]) * 1e3, 1) for k, v in rows.items()}, "ms")


if __name__ == "__main__":
    main(sys.argv[1:])
