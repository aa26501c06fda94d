"""The sandbox's allowlisted view (rewards/code/sandbox.py, `_allowlisted_root` in the harness): a program sees the
interpreter, the system libraries and declared packages, not the host's files or Unix sockets, and only its own
processes. Each probe has its negative: the same program, with the whole host in view, gets through."""

import json
import os
import secrets
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from rewards import get_verifier
from rewards.code.sandbox import (
    Isolation,
    IsolationTooWeak,
    SandboxPolicy,
    detect_isolation,
    isolation_report,
    require,
    run_sandboxed,
    view_paths,
)

ISO = detect_isolation()
pytestmark = pytest.mark.skipif(ISO.level != "allowlist",
                                reason=f"the allowlisted view needs mount namespaces; here: {ISO}")
ALLOWLIST = SandboxPolicy()
WHOLE_HOST = SandboxPolicy("namespaces", view="host")  # the negative: today's view, for comparison only
HERE = Path(__file__).resolve().parent.parent


def call(program: str, *args, pol: SandboxPolicy = ALLOWLIST):
    """`f(*args)` in the sandbox under `pol`: its result, or the error it raised."""
    r = run_sandboxed({"kind": "call", "program": program, "fn_name": "f", "cases": [list(args)]}, pol=pol)
    rec = r.records[0] if r.records else {"error": r.stderr.decode()[-300:]}
    return json.loads(rec["result"]) if "result" in rec else rec


READ = "def f(path):\n    try:\n        return open(path).read()\n    except OSError as e:\n        return type(e).__name__\n"


@pytest.fixture
def host_secret():
    """A world-readable secret in a world-traversable host folder outside /tmp (the checkout's runs/)."""
    folder = HERE / "runs" / f"sandbox-probe-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    path, secret = folder / "secret.txt", f"s3cret-{secrets.token_hex(8)}"
    path.write_text(secret)
    os.chmod(path, 0o644)
    yield str(path), secret
    path.unlink()
    folder.rmdir()


def test_a_world_readable_host_file_is_not_in_view(host_secret):
    path, secret = host_secret
    assert call(READ, path) == "FileNotFoundError"
    assert call(READ, path, pol=WHOLE_HOST) == secret


def test_the_hidden_tests_of_the_code_task_are_not_in_view():
    heldout = str(HERE / "rl/tasks/code/data/heldout.jsonl")
    first = call(READ, heldout, pol=WHOLE_HOST)
    assert first.startswith("{") and '"answer"' in first  # the negative: today a program reads the hidden tests
    assert call(READ, heldout) == "FileNotFoundError"


CONNECT = ("import socket\ndef f(path):\n    try:\n        s = socket.socket(socket.AF_UNIX)\n        s.connect(path)\n"
           "        s.sendall(b'from the sandbox')\n        return 'connected'\n    except OSError as e:\n"
           "        return type(e).__name__\n")


def test_a_host_unix_socket_is_unreachable():
    folder = HERE / "runs" / f"sock-{secrets.token_hex(3)}"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    path = str(folder / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen()
    server.settimeout(5)
    got = []

    def serve():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            got.append(None)

    try:
        thread = threading.Thread(target=serve)
        thread.start()
        assert call(CONNECT, path) == "FileNotFoundError"
        assert call(CONNECT, path, pol=WHOLE_HOST) == "connected"  # the negative: the host received the bytes
        thread.join()
        assert got == [b"from the sandbox"]
    finally:
        server.close()
        os.unlink(path)
        folder.rmdir()


LIST_ROOT = "import os\ndef f():\n    return sorted(os.listdir('/'))\n"


def test_the_root_holds_only_the_allowlist():
    own = {"dev", "etc", "proc", "tmp", "var"}  # made by the sandbox: devices, users, its /proc, scratch
    allowed = own | {p.strip("/").split("/")[0] for p in view_paths()["paths"]}
    seen = set(call(LIST_ROOT))
    assert seen <= allowed and "usr" in seen
    assert not seen & {"home", "work", "opt", "mnt", "srv", "run", "boot", "media"}
    host = set(call(LIST_ROOT, pol=WHOLE_HOST))
    assert HERE.parts[1] in host and host > own  # the negative: the host's whole root, the checkout's top included


PROCESSES = ("import os\ndef f():\n    out = []\n    for p in filter(str.isdigit, os.listdir('/proc')):\n        try:\n"
             "            out.append(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'))\n"
             "        except OSError:\n            pass\n    return out\n")


def test_proc_shows_only_the_sandbox_s_processes():
    mine = f"pytest-{os.getpid()}"
    seen = call(PROCESSES)
    assert 1 <= len(seen) <= 3 and not any("pytest" in c for c in seen)  # the harness and the program
    no_namespaces = Isolation("none", ISO.uid, ISO.cgroup)  # the negative: a sandbox without a pid namespace
    r = run_sandboxed({"kind": "call", "program": PROCESSES, "fn_name": "f", "cases": [[]]}, iso=no_namespaces,
                      pol=SandboxPolicy("rlimits"), reuse=False)
    host = json.loads(r.records[0]["result"])
    assert len(host) > 10 and any("pytest" in c for c in host), mine


def test_devices_users_and_scratch_work():
    program = ("import os, pwd\ndef f():\n    open('/dev/null', 'w').write('x')\n"
               "    return [len(open('/dev/urandom', 'rb').read(8)), open('/dev/zero', 'rb').read(2).hex(),\n"
               "            pwd.getpwuid(os.getuid()).pw_name, open('/tmp/x', 'w').write('abc'), os.getcwd()]\n")
    assert call(program) == [8, "0000", "nobody" if ISO.uid == 65534 else "root", 3, "/tmp/w"]


def test_the_standard_library_and_its_extension_modules_load():
    program = ("def f():\n    import ctypes, decimal, hashlib, json, math, sqlite3, ssl, zlib, multiprocessing\n"
               "    return [hashlib.sha256(b'x').hexdigest()[:8], zlib.crc32(b'x'), str(decimal.Decimal('1.1') * 2)]\n")
    assert call(program) == ["2d711642", 2363233923, "2.2"]


def test_a_declared_package_is_importable_and_others_are_not():
    program = "def f():\n    import numpy\n    return int(numpy.arange(5).sum())\n"
    assert "ModuleNotFoundError" in call(program)["error"]
    assert call(program, pol=SandboxPolicy(packages=("numpy",))) == 10
    stdio = run_sandboxed({"kind": "stdio", "program": "import numpy\nprint(numpy.ones(3).sum())\n"},
                          pol=SandboxPolicy(packages=("numpy",)))
    assert stdio.stdout == b"3.0\n", stdio.stderr[-300:]


def test_a_weaker_isolation_is_refused_naming_what_is_missing():
    weaker = replace(ISO, view="host")
    with pytest.raises(IsolationTooWeak, match="min_isolation=allowlist .* gives namespaces: an allowlisted view"):
        require(weaker, SandboxPolicy())
    require(weaker, SandboxPolicy("namespaces"))
    with pytest.raises(IsolationTooWeak, match="gives rlimits"):
        run_sandboxed({"kind": "stdio", "program": "print(1)"}, iso=Isolation("none", None, None),
                      pol=SandboxPolicy("namespaces"))
    r = get_verifier("code")("```python\nprint(1)\n```", {"kind": "stdio", "cases": [{"input": "", "output": "1"}]})
    assert r.status == "ok"  # this machine gives the default


def test_the_report_names_the_view():
    rep = isolation_report()
    assert rep["view"] == "allowlist" and rep["level"] == "allowlist"
    assert rep["host_unix_sockets"].startswith("unreachable")
