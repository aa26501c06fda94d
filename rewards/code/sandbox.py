"""Process sandbox for model-written programs: namespaces, an allowlisted view of the host, privilege drop,
cgroups and rlimits, as available.

`detect_isolation()` probes what this machine allows once per process; `isolation_report()` says what is in
force. `run_sandboxed` runs one program via `_sandbox_harness.py` and returns its captured output, and refuses
to where the isolation is weaker than the policy's `min_isolation` (`SandboxPolicy`, from `reward.sandbox`).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
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
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

from rewards.code import zygote
from rewards.process import die_with_parent

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_harness.py")
NOBODY = 65534
NS_FLAGS = ["--net", "--pid", "--fork", "--mount-proc", "--mount", "--ipc", "--uts", "--kill-child"]
POLICY_ENV = "PURERL_SANDBOX"  # the run's SandboxPolicy as JSON, for the scoring workers it starts
Level = Literal["allowlist", "namespaces", "rlimits"]
LEVELS: tuple[str, ...] = get_args(Level)  # strongest first


@dataclass(frozen=True)
class SandboxPolicy:
    """What a run asks of the sandbox (config `reward.sandbox`), handed to scoring workers through POLICY_ENV."""

    min_isolation: Level = "allowlist"
    packages: tuple[str, ...] = ()  # importable packages a program may use (their folders join the view)
    view: Literal["allowlist", "host"] = "allowlist"  # host: the whole host read-only, for tests and comparison

    def to_env(self) -> dict[str, str]:
        return {POLICY_ENV: json.dumps({"min_isolation": self.min_isolation, "packages": list(self.packages),
                                        "view": self.view})}


def policy() -> SandboxPolicy:
    """This process's policy: POLICY_ENV where a run set it, else the defaults."""
    raw = os.environ.get(POLICY_ENV)
    if not raw:
        return SandboxPolicy()
    d = json.loads(raw)
    return SandboxPolicy(d["min_isolation"], tuple(d["packages"]), d.get("view", "allowlist"))


def applied(iso: Isolation, pol: SandboxPolicy) -> Isolation:
    """The isolation a program runs under: the machine's, with the whole host in view where the policy asks."""
    return replace(iso, view="host") if pol.view == "host" else iso


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
    view: str = "host"  # "allowlist": a root of only the allowlisted paths; "host": the whole host

    @property
    def level(self) -> str:
        """allowlist (namespaces and the allowlisted view), namespaces (the whole host read-only) or rlimits."""
        if self.namespaces == "none":
            return "rlimits"
        return "allowlist" if self.view == "allowlist" else "namespaces"

    def report(self) -> dict:
        """What is in force, in the terms of docs/rewards.md ("Sandbox")."""
        ns = self.namespaces != "none"
        seen = {"allowlist": "allowlist: the interpreter, the system library directories and declared packages, "
                             "read-only; /dev null, zero, random; its own /proc; private tmpfs /tmp, /var/tmp, /dev/shm",
                "namespaces": "the whole host, read-only; private tmpfs /tmp, /var/tmp, /dev/shm",
                "rlimits": "the whole host, writable where the program's uid may write"}[self.level]
        return {
            **asdict(self),
            "level": self.level,
            "network_isolated": ns,
            "pid_namespace": ns,
            "host_filesystem": seen,
            "host_unix_sockets": "unreachable (no host path in view)" if self.level == "allowlist" else
                                 "reachable where a socket's path is visible and writable",
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


class IsolationTooWeak(SandboxFailure):
    """This machine cannot give the isolation the policy asks for; the message names what is missing."""


def require(iso: Isolation, pol: SandboxPolicy) -> None:
    """IsolationTooWeak unless `iso` is at least `pol.min_isolation`."""
    if LEVELS.index(iso.level) <= LEVELS.index(pol.min_isolation):
        return
    missing = {"allowlist": "an allowlisted view of the host needs mount namespaces (root, or unprivileged user "
                            "namespaces) and pivot_root", "namespaces": "namespaces need root or unprivileged user "
                            "namespaces, and the unshare command (util-linux)"}[pol.min_isolation]
    tried = "; ".join(iso.notes) or "nothing stronger worked"
    raise IsolationTooWeak(f"the code sandbox runs model-written programs only with reward.sandbox.min_isolation="
                           f"{pol.min_isolation} or stronger, and this machine gives {iso.level}: {missing} "
                           f"({tried}). Lower the requirement (reward.sandbox.min_isolation=...) only on a machine "
                           f"whose files and sockets the policy may see")


def view_paths(packages: tuple[str, ...] = ()) -> dict:
    """The host paths an allowlisted sandbox binds read-only: the interpreter's prefix (its standard library),
    the interpreter itself, the dynamic loader's library directories, and each declared package's folder (and a
    wheel's vendored `<name>.libs`); `python_path`, the folders programs import packages from."""
    exe, prefix = _python()
    paths = [prefix, exe, *library_dirs()]
    python_path = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise ValueError(f"reward.sandbox.packages: {name!r} is not importable here")
        where = list(spec.submodule_search_locations or [spec.origin])
        paths += where + glob.glob(os.path.join(os.path.dirname(where[0]), f"{name}.libs"))
        python_path.append(os.path.dirname(where[0]))
    return {"paths": sorted(set(paths)), "python_path": sorted(set(python_path))}


def library_dirs() -> list[str]:
    """Where the dynamic loader finds shared libraries: /etc/ld.so.conf's directories (with its includes), the
    ELF interpreter's directory, and the default directories that hold libraries themselves."""
    dirs: list[str] = []

    def read(conf: str) -> None:
        for line in _read(conf).splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                for inc in sorted(glob.glob(line.split(None, 1)[1])):
                    read(inc)
            elif line.startswith("/"):
                dirs.append(line)

    read("/etc/ld.so.conf")
    dirs += ["/lib64", "/usr/lib64"]
    dirs += [d for d in ("/lib", "/usr/lib") if glob.glob(os.path.join(d, "libc.so*"))]  # not multiarch
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


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


def _setup(iso: Isolation, limits: Limits, kind: str, workdir: str | None, packages: tuple[str, ...] = ()) -> dict:
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
        **_view(iso.view, packages),
    }


@functools.lru_cache(maxsize=8)
def _view(view: str, packages: tuple[str, ...]) -> dict:
    """The harness's "view" (the allowlisted paths; none: the whole host) and the packages' import path."""
    v = view_paths(packages) if view == "allowlist" or packages else {"paths": [], "python_path": []}
    return {"view": {"paths": v["paths"]} if view == "allowlist" else None, "python_path": v["python_path"]}


def _command(iso: Isolation, limits: Limits, kind: str, cfg_fd: int, rec_fd: int, workdir: str | None,
             packages: tuple[str, ...]) -> list[str]:
    setup = json.dumps(_setup(iso, limits, kind, workdir, packages))
    cmd = [_python()[0], "-I", "-S", "-B", HARNESS, setup, str(cfg_fd), str(rec_fd)]
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    if iso.namespaces == "root":
        return [unshare, *NS_FLAGS, "--", *cmd]
    if iso.namespaces == "user":
        return [unshare, "--user", "--map-root-user", *NS_FLAGS, "--", *cmd]
    return cmd


def run_sandboxed(config: dict, stdin: bytes = b"", limits: Limits = Limits(), iso: Isolation | None = None,
                  reuse: bool = True, pol: SandboxPolicy | None = None) -> RunResult:
    """Run one program. `config` holds kind/program/... (never expected outputs, except a check-kind test).
    reuse: fork it from this process's zygote (rewards/code/zygote.py) where namespaces are entered as root
    and cgroups exist; elsewhere, or with reuse=False, every program starts a sandbox of its own. `pol`: the
    isolation required and the packages in view (default: this process's `policy()`); IsolationTooWeak where
    `iso` is weaker."""
    pol = pol or policy()
    iso = applied(iso or detect_isolation(), pol)
    require(iso, pol)
    nonce = secrets.token_hex(16)
    cfg_file = tempfile.TemporaryFile()  # already unlinked: once the harness closes it, it is gone
    cfg_file.write(json.dumps({**config, "nonce": nonce}).encode())
    cfg_file.flush()
    cfg_file.seek(0)
    rec_r, rec_w = os.pipe()
    workdir = tempfile.mkdtemp(prefix="purerl-sbx-") if iso.namespaces == "none" else None
    cgroup = _Cgroup(iso.cgroup, limits) if iso.cgroup else None
    key = (iso, pol.packages)  # a zygote's view holds its packages
    zyg = zygote.borrow(key, _zygote_command(iso, pol.packages)) if reuse and cgroup and iso.namespaces == "root" else None
    t0 = time.monotonic()
    try:
        if zyg is not None:
            proc = _fork(zyg, iso, limits, config["kind"], cfg_file.fileno(), rec_w, cgroup)
        else:
            proc = _popen(_command(iso, limits, config["kind"], cfg_file.fileno(), rec_w, workdir, pol.packages),
                          cfg_file.fileno(), rec_w, cgroup)
    except BaseException:
        if zyg is not None:
            zygote.give_back(key, zyg, failed=True)
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
            zygote.give_back(key, zyg, failed=proc.setup_error is not None)
    result.records = _records(result.records, nonce)
    failure = getattr(proc, "setup_error", None) or next((r["infra_error"] for r in result.records if "infra_error" in r), None)
    if failure:
        raise SandboxFailure(failure)
    return result


def _popen(command: list[str], cfg_fd: int, rec_w: int, cgroup: _Cgroup | None) -> subprocess.Popen:
    """A sandbox of its own: unshare, then the harness in a new interpreter, joined to the cgroup before exec."""
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={}, pass_fds=(cfg_fd, rec_w), preexec_fn=cgroup.join_fn() if cgroup else die_with_parent,
        start_new_session=True,
    )


def _zygote_command(iso: Isolation, packages: tuple[str, ...]):
    return lambda sock_fd: _command(iso, Limits(), "zygote", sock_fd, -1, None, packages)


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


PROBING = SandboxPolicy("rlimits")  # the probe runs under whatever isolation it tries: it is not a model's program


def _probe(iso: Isolation) -> bool:
    """Both paths must work: call (the harness serves the program) and stdio (the harness execs python); and an
    allowlisted view must hide the host (this file's folder is not in it)."""
    limits = Limits(wall_s=20)
    sees = "import os\ndef f(p):\n    return os.path.exists(p)\n"
    try:
        call = run_sandboxed({"kind": "call", "program": sees, "fn_name": "f", "cases": [[HARNESS]]},
                             limits=limits, iso=iso, reuse=False, pol=PROBING)
        stdio = run_sandboxed({"kind": "stdio", "program": "print(int(input()) + 1)\n"}, stdin=b"1\n", limits=limits,
                              iso=iso, reuse=False, pol=PROBING)
    except OSError:
        return False
    hidden = json.dumps(iso.view != "allowlist")
    return call.records == [{"case": 0, "result": hidden}] and stdio.returncode == 0 and stdio.stdout == b"2\n"


@functools.lru_cache(maxsize=1)
def detect_isolation() -> Isolation:
    """The strongest isolation that works here, verified by running a probe program through it."""
    cgroup = _cgroup_version()
    root = os.geteuid() == 0
    candidates = []
    if shutil.which("unshare"):
        if root:
            candidates += [Isolation("root", NOBODY, cgroup, view=v) for v in ("allowlist", "host")]
            candidates.append(Isolation("root", None, cgroup))
        candidates += [Isolation("user", None, None, view=v) for v in ("allowlist", "host")]
    else:
        candidates.append(None)  # noted below: no unshare
    if root:
        candidates.append(Isolation("none", NOBODY, cgroup))
    candidates.append(Isolation("none", None, cgroup))
    tried = []
    for iso in candidates:
        if iso is None:
            tried.append("unavailable: the unshare command (util-linux) is not installed")
            continue
        if _probe(iso):
            return Isolation(iso.namespaces, iso.uid, iso.cgroup, tuple(tried), iso.view)
        tried.append(f"unavailable: namespaces={iso.namespaces} uid={iso.uid} cgroup={iso.cgroup} view={iso.view}")
    return Isolation("none", None, None, (*tried, "probe failed everywhere: sandbox runs with rlimits only"))


def isolation_report() -> dict:
    """What the code sandbox enforces on this machine (see docs/rewards.md for what is lost without it)."""
    return detect_isolation().report()
