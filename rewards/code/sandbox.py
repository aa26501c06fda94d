"""Process sandbox for model-written programs: namespaces, privilege drop, cgroups and rlimits, as available.

`detect_isolation()` probes what this machine allows once per process; `isolation_report()` says what is in
force. `run_sandboxed` runs one program via `_sandbox_harness.py` and returns its captured output.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from rewards.code import zygote
from rewards.process import die_with_parent

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_harness.py")
NOBODY = 65534
NS_FLAGS = ["--net", "--pid", "--fork", "--mount-proc", "--mount", "--ipc", "--uts", "--kill-child"]


@dataclass(frozen=True)
class Limits:
    """Per-program limits. wall_s is enforced by the parent; the rest inside the sandbox."""

    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 1024  # address space (RLIMIT_AS), and the cgroup memory limit where available
    nproc: int = 16  # processes + threads in the sandbox (pids cgroup, else RLIMIT_NPROC where it binds)
    file_mb: int = 16  # largest file the program may write
    tmp_mb: int = 64  # size of the private /tmp (mount namespace only)
    output_bytes: int = 1 << 20  # stdout and stderr are each cut at this size and the program killed


@dataclass(frozen=True)
class Isolation:
    """What the sandbox can do on this machine (probed, not assumed)."""

    namespaces: str  # "root" (unshare as root), "user" (unprivileged user namespace) or "none"
    uid: int | None  # uid the program runs as after dropping root, or None (runs as the caller)
    cgroup: str | None  # "v1" or "v2" when pids/memory cgroups are used, else None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def report(self) -> dict:
        """What is in force, in the terms of docs/rewards.md ("Sandbox")."""
        ns = self.namespaces != "none"
        return {
            **asdict(self),
            "network_isolated": ns,
            "pid_namespace": ns,
            "host_filesystem": "read-only; private tmpfs /tmp, /var/tmp, /dev/shm" if ns else "writable where the program's uid may write",
            "program_uid": self.uid if self.uid is not None else (0 if self.namespaces == "user" else os.geteuid()),
            "capabilities": "none (bounding set emptied, no_new_privs)",
            "process_limit": "pids cgroup" if self.cgroup else ("RLIMIT_NPROC" if self._nproc_binds() else "none"),
            "memory_limit": "RLIMIT_AS" + (" + memory cgroup" if self.cgroup else ""),
            "kill_all_descendants": "pid namespace" if ns else ("cgroup" if self.cgroup else "process group only"),
            "empty_environment": True,
            "tests_run_apart_from_program": True,  # call/check: the program runs in its own process
            "program_reuse": ("zygote: each program forked into fresh mount, pid and IPC namespaces, cgroup and tmpfs"
                              if self.namespaces == "root" and self.cgroup else "none: a new sandbox per program"),
        }

    def _nproc_binds(self) -> bool:
        return self.uid is not None or os.geteuid() != 0  # RLIMIT_NPROC does not bind root


class SandboxFailure(OSError):
    """The sandbox could not run the program at all (before any program code ran): infrastructure, not a score."""


@dataclass
class RunResult:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    records: list[dict]  # nonce-checked records from the harness (call / check kinds)
    timed_out: bool = False
    output_capped: bool = False
    wall_s: float = 0.0


class _Cgroup:
    """A throwaway pids+memory cgroup (v1 or v2) for one program; killing it kills every member."""

    def __init__(self, version: str, limits: Limits):
        name = f"purerl-sbx-{os.getpid()}-{secrets.token_hex(4)}"
        if version == "v1":
            self.dirs = [f"/sys/fs/cgroup/pids/{name}", f"/sys/fs/cgroup/memory/{name}"]
            settings = {self.dirs[0]: {"pids.max": limits.nproc}, self.dirs[1]: {"memory.limit_in_bytes": limits.memory_mb << 20}}
        else:
            self.dirs = [f"/sys/fs/cgroup/{name}"]
            settings = {self.dirs[0]: {"pids.max": limits.nproc, "memory.max": limits.memory_mb << 20}}
        for d in self.dirs:
            os.mkdir(d)
            for key, val in settings[d].items():
                with open(os.path.join(d, key), "w") as f:
                    f.write(str(val))

    def join_fn(self):
        paths = [os.path.join(d, "cgroup.procs") for d in self.dirs]

        def join():  # runs in the child between fork and exec
            die_with_parent()  # a sandbox never outlives the scoring worker that started it
            for p in paths:
                fd = os.open(p, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)

        return join

    def kill_and_remove(self) -> None:
        for _ in range(50):
            pids = set()
            for d in self.dirs:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids |= {int(x) for x in f.read().split()}
                except OSError:
                    pass
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for d in self.dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass


def _cgroup_version() -> str | None:
    if os.geteuid() != 0:
        return None
    if os.path.isdir("/sys/fs/cgroup/pids") and os.path.isdir("/sys/fs/cgroup/memory"):
        version = "v1"
    elif "pids" in _read("/sys/fs/cgroup/cgroup.controllers") and "memory" in _read("/sys/fs/cgroup/cgroup.subtree_control"):
        version = "v2"
    else:
        return None
    try:
        _Cgroup(version, Limits()).kill_and_remove()
    except OSError:
        return None
    _sweep_stale_cgroups(version)
    return version


def _sweep_stale_cgroups(version: str) -> None:
    """Remove the cgroups of sandboxes whose scoring worker was hard-killed before it could clean up."""
    roots = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"] if version == "v1" else ["/sys/fs/cgroup"]
    for root in roots:
        for name in os.listdir(root):
            parts = name.split("-")
            if not (name.startswith("purerl-sbx-") and len(parts) == 4 and parts[2].isdigit()):
                continue
            if os.path.exists(f"/proc/{parts[2]}"):
                continue  # its worker is alive and may be using it
            cg = _Cgroup.__new__(_Cgroup)
            cg.dirs = [os.path.join(root, name)]
            cg.kill_and_remove()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _python() -> tuple[str, str]:
    """The real interpreter (not a venv shim) and its install prefix, which the sandbox must see."""
    return os.path.realpath(sys.executable), sys.base_prefix


def _own_process_count() -> int:
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


def _setup(iso: Isolation, limits: Limits, kind: str, workdir: str | None) -> dict:
    """What the harness needs to set a sandbox up (_sandbox_harness.setup)."""
    # RLIMIT_NPROC counts every process of the uid: where a pids cgroup counts this sandbox alone it is left
    # off (else a fork bomb in one sandbox would starve the others), and for a non-root caller it must
    # leave room for the caller's own processes.
    nproc = None
    if iso.cgroup is None and iso.uid is not None:
        nproc = limits.nproc
    elif iso.cgroup is None and os.geteuid() != 0:
        nproc = _own_process_count() + limits.nproc
    return {
        "kind": kind,
        "mount": iso.namespaces != "none",
        "uid": iso.uid,
        "prefix": _python()[1],
        "workdir": workdir,
        "nproc": nproc,
        "limits": {"cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb},
        "tmp_mb": limits.tmp_mb,
    }


def _command(iso: Isolation, limits: Limits, kind: str, cfg_fd: int, rec_fd: int, workdir: str | None) -> list[str]:
    cmd = [_python()[0], "-I", "-S", "-B", HARNESS, json.dumps(_setup(iso, limits, kind, workdir)), str(cfg_fd), str(rec_fd)]
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    if iso.namespaces == "root":
        return [unshare, *NS_FLAGS, "--", *cmd]
    if iso.namespaces == "user":
        return [unshare, "--user", "--map-root-user", *NS_FLAGS, "--", *cmd]
    return cmd


def run_sandboxed(config: dict, stdin: bytes = b"", limits: Limits = Limits(), iso: Isolation | None = None,
                  reuse: bool = True) -> RunResult:
    """Run one program. `config` holds kind/program/... (never expected outputs, except a check-kind test).
    reuse: fork it from this process's zygote (rewards/code/zygote.py) where namespaces are entered as root
    and cgroups exist; elsewhere, or with reuse=False, every program starts a sandbox of its own."""
    iso = iso or detect_isolation()
    nonce = secrets.token_hex(16)
    cfg_file = tempfile.TemporaryFile()  # already unlinked: once the harness closes it, it is gone
    cfg_file.write(json.dumps({**config, "nonce": nonce}).encode())
    cfg_file.flush()
    cfg_file.seek(0)
    rec_r, rec_w = os.pipe()
    workdir = tempfile.mkdtemp(prefix="purerl-sbx-") if iso.namespaces == "none" else None
    cgroup = _Cgroup(iso.cgroup, limits) if iso.cgroup else None
    zyg = zygote.borrow(iso, _zygote_command(iso)) if reuse and cgroup and iso.namespaces == "root" else None
    t0 = time.monotonic()
    try:
        if zyg is not None:
            proc = _fork(zyg, iso, limits, config["kind"], cfg_file.fileno(), rec_w, cgroup)
        else:
            proc = _popen(iso, limits, config["kind"], cfg_file.fileno(), rec_w, workdir, cgroup)
    except BaseException:
        if zyg is not None:
            zygote.give_back(iso, zyg, failed=True)
        os.close(rec_r)
        os.close(rec_w)
        cfg_file.close()
        if cgroup:
            cgroup.kill_and_remove()
        raise
    os.close(rec_w)
    cfg_file.close()
    try:
        result = _communicate(proc, stdin, rec_r, limits, t0)
    finally:
        _kill_group(proc)
        if cgroup:
            cgroup.kill_and_remove()
        os.close(rec_r)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        if zyg is not None:
            zygote.give_back(iso, zyg, failed=proc.setup_error is not None)
    result.records = _records(result.records, nonce)
    failure = getattr(proc, "setup_error", None) or next((r["infra_error"] for r in result.records if "infra_error" in r), None)
    if failure:
        raise SandboxFailure(failure)
    return result


def _popen(iso: Isolation, limits: Limits, kind: str, cfg_fd: int, rec_w: int, workdir: str | None,
           cgroup: _Cgroup | None) -> subprocess.Popen:
    """A sandbox of its own: unshare, then the harness in a new interpreter, joined to the cgroup before exec."""
    return subprocess.Popen(
        _command(iso, limits, kind, cfg_fd, rec_w, workdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={}, pass_fds=(cfg_fd, rec_w), preexec_fn=cgroup.join_fn() if cgroup else die_with_parent,
        start_new_session=True,
    )


def _zygote_command(iso: Isolation):
    return lambda sock_fd: _command(iso, Limits(), "zygote", sock_fd, -1, None)


def _fork(zyg: zygote.Zygote, iso: Isolation, limits: Limits, kind: str, cfg_fd: int, rec_w: int,
          cgroup: _Cgroup) -> zygote.Forked:
    """A sandbox forked from the zygote: it gets the program's pipes and config, and joins the cgroup by the
    cgroup.procs files opened here (the zygote's view of the host, cgroupfs included, is read-only)."""
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
    procs = [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY) for d in cgroup.dirs]
    setup = _setup(iso, limits, kind, None)
    request = {k: setup[k] for k in ("kind", "limits", "tmp_mb", "nproc")}
    try:
        return zyg.spawn(request, [in_r, out_w, err_w, cfg_fd, rec_w, *procs], in_w, out_r, err_r, cgroup.kill_and_remove)
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w, *procs):
            os.close(fd)


def _kill_group(proc) -> None:
    """Kill the program and everything it started, and reap it: a Popen by its process group (the pid
    namespace and cgroup take the rest), a zygote's program by its cgroup."""
    if isinstance(proc, zygote.Forked):
        proc.kill_all()
        try:
            proc.wait()
        except (subprocess.TimeoutExpired, zygote.ZygoteError):  # it stopped answering: the next program starts a new one
            proc.zygote.close()
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _communicate(proc, stdin: bytes, rec_r: int, limits: Limits, t0: float) -> RunResult:
    sel = selectors.DefaultSelector()
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "records": bytearray()}
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    sel.register(rec_r, selectors.EVENT_READ, "records")
    pending_in = memoryview(stdin)
    if pending_in:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    timed_out = capped = False
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now - t0 > limits.wall_s:
            timed_out = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # a left-over descendant holds the pipes open; it is killed right after
        for key, _ in sel.select(timeout=0.05):
            name = key.data
            if name == "stdin":
                try:
                    n = os.write(proc.stdin.fileno(), pending_in[:65536])
                except (BrokenPipeError, OSError):
                    n = len(pending_in)
                pending_in = pending_in[n:]
                if not pending_in:
                    sel.unregister(proc.stdin)
                    proc.stdin.close()
                continue
            fd = key.fd
            chunk = os.read(fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            bufs[name] += chunk
            if len(bufs[name]) > limits.output_bytes:
                capped = True
        if capped:
            break
    sel.close()
    if timed_out or capped:
        _kill_group(proc)
    try:
        code = proc.wait(timeout=max(0.0, limits.wall_s - (time.monotonic() - t0)) + 0.5)
    except subprocess.TimeoutExpired:
        timed_out = True
        code = None
    return RunResult(
        returncode=code, stdout=bytes(bufs["stdout"][: limits.output_bytes]), stderr=bytes(bufs["stderr"][: limits.output_bytes]),
        records=bytes(bufs["records"][: limits.output_bytes]), timed_out=timed_out, output_capped=capped,
        wall_s=time.monotonic() - t0,
    )


def _records(raw: bytes, nonce: str) -> list[dict]:
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.pop("nonce", None) == nonce:
            out.append(rec)
    return out


def _probe(iso: Isolation) -> bool:
    """Both paths must work: call (the harness serves the program) and stdio (the harness execs python)."""
    limits = Limits(wall_s=20)
    try:
        call = run_sandboxed({"kind": "call", "program": "def f(x):\n    return x + 1\n", "fn_name": "f", "cases": [[1]]},
                             limits=limits, iso=iso, reuse=False)
        stdio = run_sandboxed({"kind": "stdio", "program": "print(int(input()) + 1)\n"}, stdin=b"1\n", limits=limits,
                              iso=iso, reuse=False)
    except OSError:
        return False
    return call.records == [{"case": 0, "result": "2"}] and stdio.returncode == 0 and stdio.stdout == b"2\n"


@functools.lru_cache(maxsize=1)
def detect_isolation() -> Isolation:
    """The strongest isolation that works here, verified by running a probe program through it."""
    cgroup = _cgroup_version()
    root = os.geteuid() == 0
    candidates = []
    if shutil.which("unshare"):
        if root:
            candidates += [Isolation("root", NOBODY, cgroup), Isolation("root", None, cgroup)]
        candidates.append(Isolation("user", None, None))
    if root:
        candidates.append(Isolation("none", NOBODY, cgroup))
    candidates.append(Isolation("none", None, cgroup))
    tried = []
    for iso in candidates:
        if _probe(iso):
            return Isolation(iso.namespaces, iso.uid, iso.cgroup, tuple(tried))
        tried.append(f"unavailable: namespaces={iso.namespaces} uid={iso.uid} cgroup={iso.cgroup}")
    return Isolation("none", None, None, (*tried, "probe failed everywhere: sandbox runs with rlimits only"))


def isolation_report() -> dict:
    """What the code sandbox enforces on this machine (see docs/rewards.md for what is lost without it)."""
    return detect_isolation().report()
