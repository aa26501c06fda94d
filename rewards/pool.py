"""`score_batch`: run verifiers in a persistent pool of worker processes with a hard per-item time limit.

Workers are fresh interpreters (`python -m rewards._worker`, never fork), warmed up once and reused across
calls. A worker that overruns its item's limit is SIGKILLed and replaced; the item gets status "timeout". A worker
that dies while scoring (killed from outside, its node's OOM killer) is replaced and its item scored again, once;
an item that kills a second worker gets status "error".
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait

from rewards.registry import get_verifier, portable_ref
from rewards.types import Reward

DEFAULT_TIMEOUT_S = 10.0
SOFT_FRACTION = 0.8  # the worker's own alarm fires first, so most overruns need no respawn
START_TIMEOUT_S = 120.0
MAX_START_FAILURES = 3
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger(__name__)


class _Worker:
    def __init__(self, spawner: concurrent.futures.Executor):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PKG_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        cmd = [sys.executable, "-m", "rewards._worker", str(p2c_r), str(c2p_w)]
        # Spawned from one long-lived thread: the worker's parent-death signal is tied to that thread.
        self.proc = spawner.submit(subprocess.Popen, cmd, pass_fds=(p2c_r, c2p_w), env=env).result()
        os.close(p2c_r)
        os.close(c2p_w)
        self.inbox = Connection(c2p_r, writable=False)
        self.outbox = Connection(p2c_w, readable=False)
        self.path = list(sys.path)
        self.outbox.send(self.path)
        self.ready = False
        self.started = time.monotonic()
        self.seq: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.inbox.close()
        self.outbox.close()


class WorkerPool:
    """A fixed number of warm worker processes; `run` scores a list of items in order."""

    def __init__(self, workers: int):
        self.size = workers
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="purerl-reward-spawner")
        self.workers = [_Worker(self._spawner) for _ in range(workers)]
        self.start_failures = 0
        self.lock = threading.Lock()

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.workers[self.workers.index(w)] = _Worker(self._spawner)

    def run(self, payloads: list[bytes | Reward], timeouts: list[float]) -> list[Reward]:
        with self.lock:
            return self._run(payloads, timeouts)

    def _run(self, payloads, timeouts) -> list[Reward]:
        results: list[Reward | None] = [p if isinstance(p, Reward) else None for p in payloads]
        pending = deque(i for i, p in enumerate(payloads) if not isinstance(p, Reward))
        retried: set[int] = set()  # items whose worker died under them once
        while pending or any(w.seq is not None for w in self.workers):
            for w in self.workers:
                if w.ready and w.seq is None and pending:
                    i = pending.popleft()
                    try:
                        if w.path != sys.path:  # so that what the trainer can import, the workers can too
                            w.path = list(sys.path)
                            w.outbox.send(("path", w.path))
                        w.outbox.send((i, payloads[i]))
                    except OSError as e:  # died between items: the item is not lost, only delayed
                        logger.warning("reward worker %d died between items; a new one takes its place", w.proc.pid)
                        pending.appendleft(i)
                        self.start_failures += 1
                        self._replace(w)
                        if self.start_failures > MAX_START_FAILURES:
                            raise RuntimeError(f"reward workers keep dying: {e!r}") from e
                        continue
                    w.seq, w.deadline = i, time.monotonic() + timeouts[i]
            if self.start_failures > MAX_START_FAILURES:
                for i in pending:
                    results[i] = Reward.fail("error", reason="reward workers failed to start")
                pending.clear()
                if all(w.seq is None for w in self.workers):
                    break
            now = time.monotonic()
            limits = [w.deadline if w.seq is not None else w.started + START_TIMEOUT_S for w in self.workers]
            ready = wait([w.inbox for w in self.workers], timeout=max(0.0, min(limits) - now))
            for w in list(self.workers):
                if w.inbox in ready and (lost := self._receive(w, results, retried)) is not None:
                    pending.appendleft(lost)
            now = time.monotonic()
            for w in list(self.workers):
                if w.seq is not None and now >= w.deadline:
                    results[w.seq] = Reward.fail("timeout", reason="hard time limit: worker killed", limit_s=timeouts[w.seq])
                    self._replace(w)
                elif not w.ready and now >= w.started + START_TIMEOUT_S:
                    self.start_failures += 1
                    self._replace(w)
        return results  # type: ignore[return-value]

    def _receive(self, w: _Worker, results: list, retried: set[int]) -> int | None:
        """Takes `w`'s message; returns the item to score again when `w` died under it for the first time."""
        try:
            msg = w.inbox.recv()
        except (EOFError, OSError):
            lost = w.seq
            try:
                code = w.proc.wait(timeout=5)  # its pipe closed as it exited
            except subprocess.TimeoutExpired:
                code = None
            self._replace(w)
            if lost is None and not w.ready:
                self.start_failures += 1
            elif lost is None:
                logger.warning("reward worker %d died (exit code %s) between items; a new one takes its place",
                               w.proc.pid, code)
            elif lost in retried:
                results[lost] = Reward.fail("error", reason=f"reward worker died twice on this item (exit code {code})")
            else:
                retried.add(lost)
                logger.warning("reward worker %d died (exit code %s) while scoring; scoring its item again", w.proc.pid,
                               code)
                return lost
            return None
        if msg[0] == "ready":
            w.ready = True
            self.start_failures = 0
        elif msg[0] == w.seq:
            results[w.seq] = msg[1]
            w.seq = None
        return None

    def close(self) -> None:
        for w in self.workers:
            w.outbox.close()  # EOF: idle workers exit on their own
        for w in self.workers:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        self.workers = []
        self._spawner.shutdown(wait=False)


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _get_pool(workers: int) -> WorkerPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.size != workers:
            _POOL.close()
            _POOL = None
        if _POOL is None:
            _POOL = WorkerPool(workers)
        return _POOL


def close_pool() -> None:
    """Stop the worker processes (also runs at interpreter exit); the next score_batch starts new ones."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(close_pool)


def _prepare(item, timeout_s: float | None) -> tuple[bytes | Reward, float]:
    name, response, reference, metadata = item
    fn = get_verifier(name) if isinstance(name, str) else name  # unknown names raise here, before any work
    limit = timeout_s if timeout_s is not None else float(getattr(fn, "timeout_s", DEFAULT_TIMEOUT_S))
    ref = portable_ref(name) if isinstance(name, str) else name
    hint = getattr(fn, "__module__", None) if isinstance(name, str) else None
    try:
        blob = pickle.dumps((ref, hint, response, reference, dict(metadata or {}), limit * SOFT_FRACTION))
    except Exception as e:
        return Reward.fail("error", reason=f"item not picklable: {e!r}"), limit
    return blob, limit


def score_batch(items, workers: int | None = None, timeout_s: float | list[float | None] | None = None) -> list[Reward]:
    """Score `(verifier, response, reference, metadata)` items in worker processes; results keep order.

    verifier: a registered name, a "pkg.mod:fn" path, an entry-point name, or a picklable verifier object
    (e.g. a factory product). timeout_s: hard wall-time limit per item, for all items or one per item (a
    reward term's own); None uses the verifier's `timeout_s` attribute (math 10 s, code 60 s, format 5 s) or 10 s.
    Items that a verifier's `answer_key` says are the same answer are scored once (`first_of_each`).
    """
    items = list(items)
    if not items:
        return []
    limits = timeout_s if isinstance(timeout_s, list) else [timeout_s] * len(items)
    if len(limits) != len(items):
        raise ValueError(f"score_batch: {len(limits)} time limits for {len(items)} items")
    first = first_of_each([_answer_key(it, t) for it, t in zip(items, limits)])
    scored = sorted(set(first))
    prepared = [_prepare(items[i], limits[i]) for i in scored]
    pool = _get_pool(workers or default_workers())
    results = dict(zip(scored, pool.run([p for p, _ in prepared], [t for _, t in prepared])))
    return [results[i] for i in first]


def first_of_each(keys: list) -> list[int]:
    """For each item, the index of the first item with its key (None: a key of its own)."""
    seen: dict = {}
    return [i if k is None else seen.setdefault(k, i) for i, k in enumerate(keys)]


def _answer_key(item, timeout_s: float | None):
    """(verifier, time limit, the verifier's answer_key) where the verifier has one; else None."""
    name, response, reference, metadata = item
    fn = get_verifier(name) if isinstance(name, str) else name
    key = getattr(fn, "answer_key", None)
    if key is None:
        return None
    try:
        return (name if isinstance(name, str) else id(fn), timeout_s, key(response, reference, dict(metadata or {})))
    except Exception:  # noqa: BLE001 - an item the key cannot read is scored on its own (and fails there)
        return None
