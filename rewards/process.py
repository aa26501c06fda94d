"""Process hygiene shared by the reward workers and the sandbox: a child never outlives its parent."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Asks the kernel to SIGKILL this process when its parent thread dies (Linux prctl); a worker or sandbox
    stuck in C code would otherwise outlive a crashed trainer. False where prctl is unavailable."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        return False
