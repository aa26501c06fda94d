"""An actor's own output into the run's log folder: vLLM, Ray and torch write to file descriptors 1 and 2 of
the actor's process, which a quiet run (rl/run/console.py) points at <run dir>/logs/<name>.log."""

from __future__ import annotations

import os
import sys

LOG_DIR_ENV = "PURERL_LOG_DIR"


def log_to_file(name: str) -> None:
    """Points this process's stdout and stderr at $PURERL_LOG_DIR/<name>.log; nothing without the variable."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(os.path.join(folder, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
