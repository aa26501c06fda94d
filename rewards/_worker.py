"""Worker process of the scoring pool: runs verifiers on items sent by `rewards.pool` over pipes.

Started as `python -m rewards._worker READ_FD WRITE_FD`; never imported by the parent.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection

from rewards.process import die_with_parent
from rewards.registry import UnknownVerifierError, get_verifier, verifier_name
from rewards.types import Reward


class SoftTimeout(BaseException):
    """Raised by SIGALRM: a BaseException so that libraries' `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):
    raise SoftTimeout


def _die_with_parent() -> None:
    die_with_parent()
    if os.getppid() == 1:  # the parent died before the kernel was told
        os._exit(0)


def _warm_up() -> None:
    from rewards.math.verifier import math_verifier

    math_verifier("\\boxed{\\frac{x}{2}+1}", "1+x/2")  # loads math_verify, sympy and the LaTeX grammar
    math_verifier("so $x = 1$", "1")  # compiles math-verify's extraction regexes (the untagged fallback)


def _resolve(ref, module_hint: str | None):
    if callable(ref):
        return ref
    try:
        return get_verifier(ref)
    except UnknownVerifierError:
        if not module_hint or module_hint == "__main__":
            raise
        importlib.import_module(module_hint)  # registering happens at import of the defining module
        return get_verifier(ref)


def _run(blob: bytes) -> Reward:
    try:
        ref, module_hint, response, reference, metadata, soft_timeout_s = pickle.loads(blob)
        fn = _resolve(ref, module_hint)
    except BaseException as e:  # noqa: BLE001 - any failure here is infrastructure, reported as such
        return Reward.fail("error", reason=f"could not load item or verifier: {e!r}")
    signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
    try:
        reward = fn(response, reference, **metadata)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeout:
        return Reward.fail("timeout", reason="soft time limit", limit_s=soft_timeout_s)
    except Exception as e:  # a verifier bug is an error for this item, not a crash of the worker
        signal.setitimer(signal.ITIMER_REAL, 0)
        return Reward.fail("error", reason=f"{verifier_name(fn)} raised {type(e).__name__}: {e}"[:500],
                           traceback=traceback.format_exc()[-4000:])
    if not isinstance(reward, Reward):
        return Reward.fail("error", reason=f"{verifier_name(fn)} returned {type(reward).__name__}, not a Reward "
                                           f"(rewards.Reward.ok / wrong / fail)")
    return reward


def main(read_fd: int, write_fd: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the trainer is the parent's to handle
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    sys_path = inbox.recv()
    sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]
    _warm_up()
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            seq, blob = inbox.recv()
        except (EOFError, OSError):
            return
        if seq == "path":  # the parent's sys.path changed since this worker started
            sys.path[:] = blob + [p for p in sys.path if p not in blob]
            continue
        try:
            reward = _run(blob)
        except SoftTimeout:  # the alarm fired just after the verifier returned
            reward = Reward.fail("timeout", reason="soft time limit")
        try:
            outbox.send((seq, reward))
        except Exception as e:  # e.g. an unpicklable object in info
            outbox.send((seq, Reward.fail("error", reason=f"result not picklable: {e!r}")))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
