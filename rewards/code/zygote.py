"""A pre-started sandbox per process that scores code (a zygote): its namespaces are entered and the host made
read-only once; each program is then forked from it into fresh mount, pid and IPC namespaces, its own cgroup and
a fresh tmpfs (`zygote` and `_program` in _sandbox_harness.py). A program is spared the interpreter's start-up
and the host's set-up (measured in docs/rewards.md); what keeps one program from the next is listed there too.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from rewards.process import die_with_parent

START_TIMEOUT_S = 20.0
REPORT_TIMEOUT_S = 5.0  # after its processes are killed, a program's exit report is due at once


class ZygoteError(OSError):
    """The zygote could not start, or stopped answering: infrastructure, never a program's score."""


class Zygote:
    """One running zygote and the socket to it. Not thread-safe: `borrow` hands it to one caller at a time."""

    def __init__(self, command: Callable[[int], list[str]]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(command(theirs.fileno()), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.stderr, env={}, pass_fds=(theirs.fileno(),),
                                         preexec_fn=die_with_parent, start_new_session=True)
        finally:
            theirs.close()
        self.sock, self.owner, self.broken = ours, os.getpid(), False
        hello = self.receive(START_TIMEOUT_S)
        if hello != {"ready": True}:
            self.close()
            self.stderr.seek(0)
            raise ZygoteError(f"the sandbox zygote did not start: {self.stderr.read()[-500:].decode(errors='replace')}")

    def spawn(self, request: dict, child_fds: list[int], stdin_w: int, stdout_r: int, stderr_r: int,
              kill: Callable[[], None]) -> Forked:
        """Fork one program: `child_fds` are its stdin, stdout, stderr, config and record fds, then the
        cgroup.procs files it joins. The returned handle stands in for a Popen in sandbox._communicate."""
        socket.send_fds(self.sock, [json.dumps(request).encode()], child_fds)
        return Forked(self, stdin_w, stdout_r, stderr_r, kill)

    def receive(self, timeout: float) -> dict | None:
        """The zygote's next message, or None if none came within `timeout` seconds."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return None
        msg = self.sock.recv(1 << 16)
        if not msg:
            self.broken = True
            raise ZygoteError("the sandbox zygote ended")
        return json.loads(msg)

    def usable(self) -> bool:
        return not self.broken and self.owner == os.getpid() and self.proc.poll() is None

    def close(self) -> None:
        self.broken = True
        self.sock.close()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # unshare and the zygote; --kill-child takes its namespaces
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.stderr.close()


class Forked:
    """A program forked by the zygote, with the Popen surface that sandbox._communicate uses: its pipes,
    poll() and wait() (its exit code comes as the zygote's report) and kill_all() (its cgroup)."""

    def __init__(self, zygote: Zygote, stdin_w: int, stdout_r: int, stderr_r: int, kill: Callable[[], None]):
        self.zygote, self.kill_all = zygote, kill
        self.stdin = os.fdopen(stdin_w, "wb", buffering=0)
        self.stdout = os.fdopen(stdout_r, "rb", buffering=0)
        self.stderr = os.fdopen(stderr_r, "rb", buffering=0)
        self.returncode: int | None = None
        self.setup_error: str | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._take(self.zygote.receive(0))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (REPORT_TIMEOUT_S if timeout is None else timeout)
        while self.returncode is None:
            msg = self.zygote.receive(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise subprocess.TimeoutExpired("sandbox zygote", timeout)
            self._take(msg)
        return self.returncode

    def _take(self, msg: dict | None) -> None:
        if msg is None:
            return
        if "setup_error" in msg:  # no program code ran: the machine's failure, raised by run_sandboxed
            self.setup_error, self.returncode = str(msg["setup_error"]), -1
        elif "ended" in msg:  # its namespaces' parent was killed with the program (a timeout, the cgroup's OOM)
            self.returncode = -signal.SIGKILL
        else:
            self.returncode = int(msg["returncode"])


_ZYGOTES: dict[object, Zygote] = {}
_FAILED: set[object] = set()
_LOCK = threading.Lock()
_BUSY: set[object] = set()


def borrow(key, command: Callable[[int], list[str]]) -> Zygote | None:
    """This process's zygote for `key` (started on first use), or None: while another thread holds it, or
    where it failed once (the caller then starts a one-off sandbox, as without a zygote)."""
    with _LOCK:
        if key in _BUSY or key in _FAILED:
            return None
        _BUSY.add(key)
    try:
        zygote = _ZYGOTES.get(key)
        if zygote is None or not zygote.usable():
            if zygote is not None and zygote.owner == os.getpid():
                zygote.close()
            _ZYGOTES[key] = zygote = Zygote(command)
        return zygote
    except OSError:
        _FAILED.add(key)
        _BUSY.discard(key)
        return None


def give_back(key, zygote: Zygote, failed: bool = False) -> None:
    """End a borrow; `failed` (a program's set-up failed in it) retires the zygote for this process."""
    if failed:
        zygote.close()
        _FAILED.add(key)
    with _LOCK:
        _BUSY.discard(key)

