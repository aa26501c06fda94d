"""The last stage of a step: the trainer's new weights into every engine, timed and sized."""

from __future__ import annotations

import time


def sync_weights(pool, trainer) -> dict[str, float]:
    """Pushes the trainer's weights into the pool's live engines; returns the sync metrics."""
    t = time.perf_counter()
    engine_s = pool.update_weights(trainer.weights())
    seconds = time.perf_counter() - t
    moved = trainer.weight_bytes() * len(pool.live())  # bytes from the trainer to the engines
    return {
        "time/sync": seconds,
        "sync/engine_load_s": engine_s,  # the slowest engine's in-place load, inside time/sync
        "sync/bytes": moved,
        "sync/gb_per_s": moved / max(seconds, 1e-9) / 1e9,
    }
