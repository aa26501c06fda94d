"""Runs inside the sandbox (stdlib only): `python _sandbox_harness.py SETUP_JSON CONFIG_FD RECORD_FD`.

setup: privileged, in fresh namespaces; prepares mounts, drops privileges and sets limits, then runs `run`.
run: the trusted side. It reads the config (program, cases or test, nonce) from CONFIG_FD and writes
    nonce-tagged records to RECORD_FD. For stdio it becomes the program. For call and check it never runs
    program code: it forks a process (`serve`) before reading the config, and calls the program's functions
    by message, so the test, the nonce and RECORD_FD are never in a process the program controls.
serve: the untrusted side. It loads the program and answers calls with plain values (`encode`).
zygote (`python _sandbox_harness.py SETUP_JSON SOCKET_FD`): `setup`'s host mounts once, then one fresh
    sandbox per program sent over the socket, forked into new mount, pid and IPC namespaces (`_program`).
view: with SETUP_JSON's "view", the program's root is a new tmpfs holding only the listed host paths (the
    interpreter, the library directories, declared packages) read-only, a minimal /dev and /etc, and its own
    /proc and /tmp (`_allowlisted_root`); the host's root is detached. Without it, the whole host read-only.
"""

import builtins
import ctypes
import fcntl
import json
import os
import resource
import socket
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEPT_FLAGS = 2 | 4 | 8 | 1024 | 2048 | 4096  # nosuid, nodev, noexec, noatime, nodiratime, relatime (statvfs = MS_*)
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, CAP_VERSION_3 = 4, 24, 38, 0x20080522
WORKDIR = "/tmp/w"
MAX_MESSAGE = 16 << 20  # one reply from the program process; more is an attack on the test process
MAX_DEPTH = 200  # nesting of a value crossing between the two processes
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "urandom", "random")
SCRATCH = ("/tmp", "/dev/shm", "/var/tmp")  # a fresh tmpfs each, per program
REPORT_FD = 5  # in a zygote's program child: the pipe its exit report goes back on


def _mount(src, target, fstype, flags, data=None):
    libc = ctypes.CDLL(None, use_errno=True)
    enc = [None if x is None else x.encode() for x in (src, target, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {target}: {os.strerror(err)}")


def _umount(target):
    ctypes.CDLL(None, use_errno=True).umount2(target.encode(), MNT_DETACH)


def _read_only_host():
    """Remount every mount of this namespace read-only, so that only the private tmpfs mounts made after
    this are writable. Flags the kernel locks (nosuid, nodev, noexec, atime) are kept, or it refuses."""
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in targets:
        target = target.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        try:
            kept = os.statvfs(target).f_flag & KEPT_FLAGS
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
        except OSError:
            pass  # a mount hidden under another one, or one the kernel will not remount: left as it was


def _blocked_ancestor(path):
    """First directory on the way to `path` that 'others' cannot traverse (e.g. /root, mode 700)."""
    parts = os.path.abspath(path).split("/")[1:]
    cur = ""
    for part in parts:
        cur += "/" + part
        if os.path.isdir(cur) and not os.stat(cur).st_mode & 0o001:
            return cur
    return None


def _expose(prefix):
    """Make `prefix` (the Python install) reachable for an unprivileged uid, at the same path, read-only.

    The blocked ancestor is covered by an empty tmpfs, which also hides everything else it held."""
    blocked = _blocked_ancestor(prefix)
    if blocked is None:
        return
    stage = "/tmp/.purerl-stage"
    os.makedirs(stage)
    _mount(prefix, stage, None, MS_BIND | MS_REC)
    _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    os.makedirs(prefix, mode=0o755, exist_ok=True)
    _mount(stage, prefix, None, MS_BIND | MS_REC)
    _mount(None, prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _umount(stage)
    os.rmdir(stage)


def _host_mounts(s):
    """The host as every program sees it: private mounts, only the allowlisted paths (or, without a view, the
    whole host read-only), private tmpfs scratch, the Python install reachable for the program's uid. Done once
    per sandbox, or once per zygote."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if s.get("view"):
        _allowlisted_root(s["view"])
    else:
        _read_only_host()
    _fresh_tmp(s)
    if s["uid"] is not None and not s.get("view"):
        _expose(s["prefix"])


def _fresh_tmp(s):
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={s['tmp_mb']}m")
    for d in SCRATCH[1:]:
        if os.path.isdir(d):
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=1m")


# --- the allowlisted view: a root that holds only what running Python needs ------------------------------


def _allowlisted_root(view):
    """Build a tmpfs root with the view's host paths bound read-only at their own paths (symlinks on the way
    recreated), /dev's harmless devices, an /etc that names the sandbox's users, this pid namespace's /proc and
    scratch mount points; pivot into it, detach the host's root, and make the new root read-only."""
    new = "/tmp"  # in this private mount namespace the host's /tmp is covered, then left behind by the pivot
    _mount("tmpfs", new, "tmpfs", MS_NOSUID, "mode=755,size=4m")
    bound = []
    for path in sorted(view["paths"], key=lambda p: len(os.path.realpath(p))):
        real = _mirror(new, path)
        if not os.path.exists(real) or any(real == b or real.startswith(b + "/") for b in bound):
            continue  # missing on this host, or inside a directory bound already
        _bind_read_only(real, new + real)
        bound.append(real)
    for d in ("proc", "dev", "etc", "tmp", "var/tmp", "dev/shm", ".old"):
        os.makedirs(os.path.join(new, d), mode=0o755, exist_ok=True)
    # this pid namespace's /proc (unshare --mount-proc), carried over: a user namespace may not mount a fresh one
    # once no proc is fully visible. A zygote's programs mount their own over it.
    _mount("/proc", f"{new}/proc", None, MS_BIND | MS_REC)
    for name in DEVICES:
        open(f"{new}/dev/{name}", "w").close()
        _mount(f"/dev/{name}", f"{new}/dev/{name}", None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    with open(f"{new}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/tmp:/nonexistent\nnobody:x:65534:65534:nobody:/tmp:/nonexistent\n")
    with open(f"{new}/etc/group", "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    _pivot_root(new, f"{new}/.old")
    os.chdir("/")
    _umount("/.old")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _mirror(new, path, depth=0):
    """Recreate `path`'s components inside `new` as the host has them: directories, and symlinks with the same
    target (whose own components are mirrored in turn). Returns the host's real path of `path`."""
    if depth > 40:
        raise OSError(f"too many symlinks on the way to {path}")
    cur = "/"
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        host = os.path.join(cur, part)
        if os.path.islink(host):
            target = os.readlink(host)
            if not os.path.lexists(new + host):
                os.symlink(target, new + host)
            cur = _mirror(new, os.path.normpath(os.path.join(cur, target)), depth + 1)
        else:
            cur = host
            if i < len(parts) - 1 and os.path.isdir(host):
                os.makedirs(new + host, mode=0o755, exist_ok=True)
    return cur


def _bind_read_only(source, target):
    """Bind a host file or directory (and the mounts under it) at `target`, read-only; flags the kernel locks on
    the source's mount (nosuid, nodev, noexec, atime) are kept, or it refuses the remount."""
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    kept = os.statvfs(target).f_flag & KEPT_FLAGS
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _pivot_root(new, put_old):
    import platform

    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: no syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, new.encode(), put_old.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root {new}: {os.strerror(err)}")


def setup(s, cfg_fd, rec_fd):
    if s["mount"]:
        _host_mounts(s)
        os.makedirs(WORKDIR, mode=0o700)
        workdir = WORKDIR
    else:
        workdir = s["workdir"]
    _confine(s, workdir)
    run(cfg_fd, rec_fd, s["kind"], s.get("python_path") or [])


def _confine(s, workdir):
    """Drop to the program's uid with no capabilities, inside `workdir`, under the rlimits."""
    if s["uid"] is not None:
        os.chown(workdir, s["uid"], s["uid"])
    os.chdir(workdir)
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):  # empty the bounding set while still privileged: no exec can regain a capability
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails past the last capability, or without CAP_SETPCAP
    if s["uid"] is not None:
        os.setgroups([])
        os.setgid(s["uid"])
        os.setuid(s["uid"])
    lim = s["limits"]
    for res, val in [
        (resource.RLIMIT_CPU, lim["cpu_s"]),
        (resource.RLIMIT_AS, lim["memory_mb"] << 20),
        (resource.RLIMIT_FSIZE, lim["file_mb"] << 20),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ] + ([(resource.RLIMIT_NPROC, s["nproc"])] if s["nproc"] else []):
        resource.setrlimit(res, (val, val))
    _drop_capabilities(libc)  # from here on nothing in the sandbox can raise the limits above


# --- the zygote: one set-up sandbox that forks a fresh one per program -----------------------------------


def zygote(s, sock_fd):
    """Serve programs forever: the host mounts are made once here; each request (its setup and the program's
    fds) is forked into new mount, pid and IPC namespaces (`_program`). The zygote runs no program code and
    never reads a config, so nothing of one program is in the memory the next one is forked from."""
    sock = socket.socket(fileno=sock_fd)
    _host_mounts(s)
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
        except OSError:
            return
        if not msg:
            return  # the scoring worker closed its end
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                os.close(report_r)
                _program({**s, **json.loads(msg)}, fds, report_w)
            finally:
                os._exit(127)
        for fd in (report_w, *fds):
            os.close(fd)
        with os.fdopen(report_r, "rb") as f:
            report = f.read()
        os.waitpid(pid, 0)
        sock.send(report or json.dumps({"ended": True}).encode())  # killed before it could report


def _program(s, fds, report_w):
    """In a child of the zygote: join the program's cgroup, enter new mount, pid and IPC namespaces, and fork
    their init, which sets up and runs the program. Reports its exit code, or why it never started."""
    stdin, stdout, stderr, cfg_fd, rec_fd, *cgroup_fds = fds

    def report(**rec):
        os.write(REPORT_FD, json.dumps(rec).encode())
        os._exit(0)

    for fd in cgroup_fds:  # the cgroup.procs files the worker opened: this process and all it forks join
        try:
            os.write(fd, b"0")
        except OSError as e:
            os.write(report_w, json.dumps({"setup_error": f"joining the program's cgroup: {e!r}"}).encode())
            os._exit(0)
    _place([stdin, stdout, stderr, cfg_fd, rec_fd, report_w])  # 0-2 the program's stdio, 3 config, 4 records
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC) != 0:
        report(setup_error=f"unshare: {os.strerror(ctypes.get_errno())}")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pid 1 of the new pid namespace: when it ends, everything the program started ends
        os.close(ready_r)
        os.close(REPORT_FD)
        try:
            _mount(None, "/", None, MS_REC | MS_PRIVATE)
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this namespace's processes only
            _fresh_tmp(s)  # over the zygote's: nothing a program writes outlives it
            os.makedirs(WORKDIR, mode=0o700)
            _confine(s, WORKDIR)
        except BaseException as e:  # noqa: BLE001 - no program code has run: the machine's failure
            os.write(ready_w, repr(e)[:300].encode())
            os._exit(0)
        os.close(ready_w)
        run(3, 4, s["kind"], s.get("python_path") or [])
        os._exit(0)
    os.close(ready_w)
    for fd in range(5):  # the program's pipes close when the program's processes are gone, not this one
        os.close(fd)
    with os.fdopen(ready_r, "rb") as f:
        failed = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if failed:
        report(setup_error=failed)
    report(returncode=os.waitstatus_to_exitcode(status))


def _place(fds):
    """Put each fd at the number of its index (whatever numbers they came with) and close every other fd."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256 + i) for i, fd in enumerate(fds)]
    for i, fd in enumerate(high):
        os.dup2(fd, i)
    os.closerange(len(fds), 1 << 16)


def _drop_capabilities(libc):
    """No capabilities and no new privileges (setuid binaries). This is what keeps a program that runs as
    (namespace) root, where no uid could be dropped, from reading the trusted process's memory."""
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for capabilities 0-31 and 32-63: none
    if libc.capset(header, data) != 0 or libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"dropping capabilities failed: {os.strerror(err)}")


class Channel:
    """Newline-delimited JSON over a pair of pipe fds."""

    def __init__(self, read_fd, write_fd):
        self.r, self.w, self.buf = read_fd, write_fd, b""

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.w, data) :]

    def recv(self):
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_MESSAGE:
                raise OverflowError("reply from the program is too large")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise EOFError("the program process ended")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


def encode(value, depth=0):
    """Tagged JSON form of a builtin value. Runs in the program process, so its output is only data:
    subclasses are reduced to their builtin base, anything else is refused."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None:
        return ["n"]
    if isinstance(value, bool):
        return ["B", value is True]
    if isinstance(value, int):
        return ["i", hex(int.__index__(value))]
    if isinstance(value, float):
        return ["f", float.hex(value)]
    if isinstance(value, complex):
        return ["c", float.hex(complex.__getattribute__(value, "real")), float.hex(complex.__getattribute__(value, "imag"))]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["y", bytes(value).hex()]
    for tag, base in (("t", tuple), ("l", list), ("S", set), ("F", frozenset)):
        if isinstance(value, base):
            return [tag, [encode(v, depth + 1) for v in base.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    raise TypeError(f"a value of type {type(value).__name__} is not a builtin value")


def decode(x, depth=0):
    """Inverse of `encode`, run in the trusted process: it can only build builtin values."""
    if depth > MAX_DEPTH or not isinstance(x, list) or not x or not isinstance(x[0], str):
        raise ValueError("malformed value from the program process")
    tag, args = x[0], x[1:]
    if tag == "n":
        return None
    if tag == "B":
        return args[0] is True
    if tag == "i":
        return int(args[0], 16)  # base 16: no limit on digits, and linear time
    if tag == "f":
        return float.fromhex(args[0])
    if tag == "c":
        return complex(float.fromhex(args[0]), float.fromhex(args[1]))
    if tag == "s" and isinstance(args[0], str):
        return args[0]
    if tag == "y":
        return bytes.fromhex(args[0])
    if tag in ("t", "l", "S", "F"):
        base = {"t": tuple, "l": list, "S": set, "F": frozenset}[tag]
        return base(decode(v, depth + 1) for v in args[0])
    if tag == "d":
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in args[0]}
    raise ValueError(f"unknown tag {tag!r} from the program process")


class ProgramError(Exception):
    """The program failed to answer a call (raised, died, or returned a non-builtin value)."""


class Remote:
    """The program's functions as seen from the trusted test process: every call is a message."""

    def __init__(self, chan):
        self.chan = chan

    def call(self, name, args, kwargs):
        self.chan.send(["call", name, encode(list(args)), encode(dict(kwargs))])
        reply = self.chan.recv()
        if not isinstance(reply, list) or len(reply) != 2 or reply[0] not in ("ok", "err"):
            raise ProgramError("malformed reply")
        if reply[0] == "err":
            raise ProgramError(str(reply[1])[:300])
        return decode(reply[1])

    def function(self, name):
        def proxy(*args, **kwargs):
            return self.call(name, args, kwargs)

        proxy.__name__ = name
        return proxy


def _nondumpable():
    # Same uid as the program process: without this it could ptrace us or read /proc/<pid>/mem.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _fork_program_process(cfg_fd, rec_fd):
    """Fork the process that will run the program; returns the trusted side's channel to it.

    The fork happens before the config is read, so the child's memory never holds the test or the nonce,
    and the child closes the config and record fds before it receives the program."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    if os.fork() == 0:
        try:
            for fd in (cfg_fd, rec_fd, req_w, resp_r):
                os.close(fd)
            serve(Channel(req_r, resp_w))
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(resp_w)
    return Channel(resp_r, req_w)


def run(cfg_fd, rec_fd, kind, python_path=()):
    """Trusted side. stdio: exec the program as a script. call / check: the program runs in a forked
    process (`serve`) and is called by message, so no program code ever runs in this process. `python_path`:
    the declared packages' directories, put on the program's import path."""
    if kind == "stdio":
        os.close(rec_fd)
        with os.fdopen(cfg_fd, "rb") as f:
            src = json.loads(f.read())["program"]
        with open("prog.py", "w") as f:
            f.write(src)
        if not python_path:
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "prog.py"])
        launch = f"import runpy, sys; sys.path[1:1] = {list(python_path)!r}; runpy.run_path('prog.py', run_name='__main__')"
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "-c", launch])
    sys.path[0:0] = list(python_path)
    _nondumpable()
    try:
        chan = _fork_program_process(cfg_fd, rec_fd)
    except OSError as e:  # no program code has run yet: this is the machine's failure, not the program's
        chan = e
    with os.fdopen(cfg_fd, "rb") as f:
        cfg = json.loads(f.read())
    nonce = cfg.pop("nonce")

    def record(**rec):
        os.write(rec_fd, (json.dumps({"nonce": nonce, **rec}) + "\n").encode())

    if isinstance(chan, OSError):
        record(infra_error=f"could not start the program process: {chan!r}")
        os._exit(0)

    try:
        chan.send({"program": cfg["program"]})
        hello = chan.recv()
    except Exception as e:  # noqa: BLE001 - EOF, an oversized or malformed reply: the program failed to load
        record(load_error=f"the program process ended while loading: {e!r}"[:300])
        os._exit(0)
    if not isinstance(hello, dict) or "names" not in hello:
        record(load_error=str(hello.get("load_error") if isinstance(hello, dict) else "bad hello")[:300])
        os._exit(0)
    remote = Remote(chan)
    if kind == "call":
        for i, args in enumerate(cfg["cases"]):
            try:
                record(case=i, result=json.dumps(remote.call(cfg["fn_name"], args, {}), allow_nan=True))
            except (EOFError, OSError, OverflowError) as e:  # the channel is gone or out of step
                record(case=i, error=repr(e)[:300])
                break
            except Exception as e:  # noqa: BLE001 - includes a result with no JSON form (a set, bytes)
                record(case=i, error=repr(e)[:300])
        os._exit(0)
    # kind == "check", HumanEval style: the test sees the program's functions and plain values by name,
    # except names of builtins: `def abs(x): return 0` must not change what the test's abs() means.
    test_globals = {"__name__": "__test__"}
    try:
        names = hello["names"]
        for name in names["functions"]:
            if isinstance(name, str) and not hasattr(builtins, name):
                test_globals[name] = remote.function(name)
        for name, value in names["values"].items():
            if not hasattr(builtins, name):
                test_globals[name] = decode(value)
        exec(compile(cfg["test"], "test.py", "exec"), test_globals)
        test_globals["check"](remote.function(cfg["entry_point"]))
        record(passed=True)
    except BaseException as e:  # noqa: BLE001 - whatever stopped the test, it did not pass
        record(error=repr(e)[:300])
    os._exit(0)


def serve(chan):
    """Untrusted side: receive the program, load it, then answer ["call", name, args, kwargs] until EOF."""
    try:
        src = chan.recv()["program"]
    except (EOFError, OSError):
        return
    g = {"__name__": "__sandbox__"}
    try:
        exec(compile(src, "solution.py", "exec"), g)
    except BaseException as e:  # noqa: BLE001 - SystemExit included: an early exit earns nothing
        chan.send({"load_error": repr(e)[:300]})
        return
    functions, values = [], {}
    for name, value in list(g.items()):
        if name.startswith("__"):
            continue
        if callable(value):
            functions.append(name)
            continue
        try:
            values[name] = encode(value)
        except (TypeError, ValueError, RecursionError):
            pass
    chan.send({"names": {"functions": functions, "values": values}})
    while True:
        try:
            _, name, args, kwargs = chan.recv()
        except (EOFError, OSError):
            return
        try:
            fn = g.get(name)
            if fn is None and "Solution" in g:  # LeetCode style: a method of class Solution
                fn = getattr(g["Solution"](), name)
            reply = ["ok", encode(fn(*decode(args), **decode(kwargs)))]
        except BaseException as e:  # noqa: BLE001
            reply = ["err", repr(e)[:300]]
        chan.send(reply)


if __name__ == "__main__":
    _setup = json.loads(sys.argv[1])
    if _setup["kind"] == "zygote":
        zygote(_setup, int(sys.argv[2]))
    else:
        setup(_setup, int(sys.argv[2]), int(sys.argv[3]))
