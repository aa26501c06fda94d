"""The "code" verifier: each reference kind, and attacks that must earn nothing and leave the host untouched."""

import os
import secrets
import socket
import threading
import time

import pytest

import rewards
from rewards import get_verifier, score_batch
from rewards.code import extract_program, json_equal
from rewards.code.sandbox import isolation_report

CODE = get_verifier("code")
FAST = {"time_limit_s": 3.0}

STDIO = {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}]}
CALL = {"kind": "call", "fn_name": "add", "cases": [{"args": [1, 2], "output": 3}, {"args": [2, 2], "output": 4}]}
CHECK = {"kind": "check", "entry_point": "add", "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n"}
ADD = "def add(a, b):\n    return a + b\n"
ADD_MAIN = ADD + "if __name__ == '__main__':\n    a, b = map(int, input().split())\n    print(add(a, b))\n"


def fenced(src: str) -> str:
    return f"Here is my solution.\n```python\n{src}```\nDone."


def procs_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


# --- reference kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [STDIO, CALL, CHECK], ids=["stdio", "call", "check"])
def test_correct_program_scores_one(spec):
    r = CODE(fenced(ADD_MAIN), spec, **FAST)
    assert (r.score, r.status) == (1.0, "ok")


def test_partial_credit_and_all_or_nothing():
    half = "def add(a, b):\n    return 3\nif __name__ == '__main__':\n    print(add(*map(int, input().split())))\n"
    assert (CODE(half, STDIO, **FAST).score, CODE(half, CALL, **FAST).score) == (0.5, 0.5)
    assert CODE(half, CALL, all_or_nothing=True, **FAST).score == 0.0
    assert CODE(half, CHECK, **FAST).score == 0.0  # check kind is a single all-or-nothing test


def test_stdio_compares_lines_after_trailing_whitespace():
    spec = {"kind": "stdio", "cases": [{"input": "", "output": "a b\nc\n"}]}
    assert CODE("print('a b   ')\nprint('c')\n\n", spec, **FAST).score == 1.0
    assert CODE("print('a b')\nprint()\nprint('c')", spec, **FAST).score == 0.0  # an extra line
    assert CODE("print('a  b')\nprint('c')", spec, **FAST).score == 0.0  # inner whitespace counts


def test_call_solution_class_and_strict_json():
    assert CODE("class Solution:\n    def add(self, a, b):\n        return a + b\n", CALL, **FAST).score == 1.0
    spec = {"kind": "call", "fn_name": "f", "cases": [{"args": [], "output": 1}, {"args": [], "output": [1, 2]}]}
    assert CODE("def f():\n    return True\n", spec, **FAST).score == 0.0  # True is not 1 in JSON
    assert CODE("def f():\n    return (1, 2) if f.n else 1\nf.n = 0\n", spec, **FAST).score == 0.5
    assert json_equal(2, 2.0) and json_equal([1, {"a": 0.1 + 0.2}], [1, {"a": 0.3}])
    assert not json_equal(1, "1") and not json_equal(None, 0) and not json_equal([1], [1, 1])


def test_program_selection():
    assert extract_program("```python\na=1\n```\ntext\n```python\nb=2\n```") == "b=2\n"
    assert extract_program("```python\nx = 1") == "x = 1"
    assert extract_program("```\nplain\n```") == "plain\n"
    assert extract_program("```python\nyes\n```\n```\nno\n```") == "yes\n"
    assert extract_program("print(1)") == "print(1)"


def test_bad_reference_is_error_and_empty_is_no_answer():
    assert CODE(ADD, {"kind": "nope"}).status == "error"
    assert CODE(ADD, {"kind": "call", "cases": [{"args": [], "output": 1}]}).status == "error"
    assert CODE("```python\n```", CALL).status == "no_answer"


def test_infinite_loop_is_bounded():
    t0 = time.monotonic()
    r = CODE("def add(a, b):\n    while True:\n        pass\n", CALL, time_limit_s=1.0)
    assert (r.score, r.info["first_failure"]) == (0.0, "time limit")
    assert time.monotonic() - t0 < 10


# --- attacks -------------------------------------------------------------------------------------------

EXIT_EARLY = "import sys\nsys.exit(0)\n" + ADD
OS_EXIT_IN_CALL = "import os\ndef add(a, b):\n    os._exit(0)\n"
ATEXIT_FORGE = (
    "import atexit, os, sys\n"
    "def forge():\n"
    "    for fd in range(3, 20):\n"
    "        try:\n"
    "            os.write(fd, b'{\"passed\": true, \"case\": 0, \"result\": \"3\"}\\n')\n"
    "        except OSError:\n"
    "            pass\n"
    "    print('3\\n10')\n"
    "atexit.register(forge)\n"
    "def add(a, b):\n"
    "    sys.exit(0)\n"
    "sys.exit(0)\n"
)
ALWAYS_EQUAL = (
    "class Anything(int):\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n"
    "    __hash__ = int.__hash__\n"
    "def add(a, b):\n    return Anything(0)\n"
)
PATCH_BUILTINS = "import builtins\nbuiltins.abs = lambda x: 0\n" + "def add(a, b):\n    return 0\n"
# Walk up the frames to the harness, take its nonce, forge a "passed" record on the record fd and leave.
FRAME_WALK = (
    "import json, os, sys\n"
    "def forge():\n"
    "    f = sys._getframe()\n"
    "    while f is not None and 'nonce' not in f.f_locals:\n"
    "        f = f.f_back\n"
    "    rec = json.dumps({'nonce': f.f_locals['nonce'], 'passed': True, 'case': 0, 'result': '3'}) + '\\n'\n"
    "    for fd in range(3, 64):\n"
    "        try:\n"
    "            os.write(fd, rec.encode())\n"
    "        except OSError:\n"
    "            pass\n"
    "    os._exit(0)\n"
    "def add(a, b):\n    forge()\n"
    "forge()\n"
)
# From inside a call, make the test's frame jump past its asserts.
SKIP_ASSERTS = (
    "import sys\n"
    "def add(a, b):\n"
    "    caller = sys._getframe(1)\n"
    "    def tracer(frame, event, arg):\n"
    "        if event == 'line' and frame is caller:\n"
    "            frame.f_lineno = frame.f_code.co_firstlineno + 100\n"
    "        return tracer\n"
    "    caller.f_trace = tracer\n"
    "    sys.settrace(lambda *a: None)\n"
    "    return 0\n"
)
SHADOW_BUILTINS = "def abs(x):\n    return 0\n" + "def add(a, b):\n    return 0\n"
ABS_CHECK = {"kind": "check", "entry_point": "add", "test": "def check(candidate):\n    assert abs(candidate(1, 2) - 3) < 1e-9\n"}


@pytest.mark.parametrize(
    "program, spec",
    [
        (EXIT_EARLY, CHECK), (EXIT_EARLY, CALL), (EXIT_EARLY, STDIO),
        (OS_EXIT_IN_CALL, CHECK), (OS_EXIT_IN_CALL, CALL), ("import os\nos._exit(0)\n", STDIO),
        (ATEXIT_FORGE, CHECK), (ATEXIT_FORGE, CALL), (ATEXIT_FORGE, STDIO),
        (ALWAYS_EQUAL, CHECK), (ALWAYS_EQUAL, CALL),
        (PATCH_BUILTINS, ABS_CHECK), (SHADOW_BUILTINS, ABS_CHECK),
        (FRAME_WALK, CHECK), (FRAME_WALK, CALL), (SKIP_ASSERTS, CHECK),
    ],
    ids=["exit-check", "exit-call", "exit-stdio", "os_exit-check", "os_exit-call", "os_exit-stdio",
         "atexit-check", "atexit-call", "atexit-stdio", "always_equal-check", "always_equal-call", "patch_builtins", "shadow_builtins",
         "frame_walk-check", "frame_walk-call", "skip_asserts-check"],
)
def test_cheats_earn_nothing(program, spec):
    r = CODE(fenced(program), spec, **FAST)
    assert (r.score, r.status) == (0.0, "wrong"), r


def test_fork_bomb_is_bounded_and_leaves_nothing():
    marker = f"bomb{secrets.token_hex(4)}"
    bomb = f"# {marker}\nimport os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    t0 = time.monotonic()
    r = CODE(bomb, CALL, time_limit_s=2.0)
    assert r.score == 0.0
    assert time.monotonic() - t0 < 20
    time.sleep(0.2)
    assert procs_with(marker) == []


def daemon_program(marker: str, result: str) -> str:
    """`add` that leaves a detached grandchild (setsid + double fork) sleeping with `marker` in its argv."""
    return (
        "import os, sys, time\n"
        "def add(a, b):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
        "        os._exit(0)\n"
        "    time.sleep(0.3)\n"
        f"    return {result}\n"
    )


def test_daemon_child_is_killed():
    marker = f"daemon{secrets.token_hex(4)}"
    prog = daemon_program(marker, "a + b")
    r = CODE(prog, CALL, **FAST)
    assert r.score == 1.0  # the program itself is right; what matters is what it leaves behind
    time.sleep(0.3)
    assert procs_with(marker) == []


def test_files_outside_the_sandbox_are_untouched(tmp_path):
    token = secrets.token_hex(4)
    targets = [f"/tmp/purerl_escape_{token}", str(tmp_path / "escape.txt"),
               os.path.join(os.path.dirname(rewards.__file__), f"escape_{token}.txt")]
    prog = "def add(a, b):\n    n = 0\n"
    for t in targets:
        prog += f"    try:\n        open({t!r}, 'w').write('x')\n        n += 1\n    except OSError:\n        pass\n"
    prog += "    return n\n"
    spec = {"kind": "call", "fn_name": "add", "cases": [{"args": [0, 0], "output": 3}]}
    r = CODE(prog, spec, **FAST)
    for t in targets:
        assert not os.path.exists(t), t
    assert r.score == 0.0  # at most the sandbox's own private /tmp was writable


def test_secret_environment_is_invisible(monkeypatch):
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    monkeypatch.setenv("PURERL_TEST_SECRET", secret)
    prog = (
        "import os\n"
        "def add():\n"
        "    found = os.environ.get('PURERL_TEST_SECRET')\n"
        "    for pid in os.listdir('/proc'):\n"
        "        try:\n"
        "            data = open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')\n"
        "        except OSError:\n"
        "            continue\n"
        "        for kv in data.split('\\0'):\n"
        "            if kv.startswith('PURERL_TEST_SECRET='):\n"
        "                found = kv.split('=', 1)[1]\n"
        "    return found\n"
    )
    spec = {"kind": "call", "fn_name": "add", "cases": [{"args": [], "output": secret}]}
    r = CODE(prog, spec, **FAST)
    assert (r.score, r.info["passed"]) == (0.0, 0)


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)))
    thread.start()
    prog = (
        "import socket\n"
        "def add():\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
        "        return 'connected'\n"
        "    except OSError as e:\n"
        "        return 'blocked'\n"
    )
    spec = {"kind": "call", "fn_name": "add", "cases": [{"args": [], "output": "connected"}]}
    r = CODE(prog, spec, **FAST)
    thread.join()
    server.close()
    assert r.score == 0.0
    assert accepted == [False]


def _accept(server) -> bool:
    try:
        conn, _ = server.accept()
        conn.close()
        return True
    except OSError:
        return False


def test_huge_output_is_capped():
    t0 = time.monotonic()
    r = CODE("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", STDIO, **FAST)
    assert r.score == 0.0 and r.info["first_failure"] == "output limit"
    r2 = CODE("def add(a, b):\n    return 'y' * 50_000_000\n", CALL, **FAST)
    assert r2.score == 0.0
    assert time.monotonic() - t0 < 30


def test_killing_everything_hurts_nobody_outside():
    prog = "import os, signal\ndef add(a, b):\n    for pid in (-1, os.getppid(), 1):\n        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return a + b\n"
    out = score_batch([("code", prog, CALL, {"time_limit_s": 3.0}), ("math", "\\boxed{2}", "2", {})], workers=2)
    assert out[1].status == "ok"
    assert out[0].status in ("ok", "wrong")  # whatever it did to itself, the worker survived to report
    assert score_batch([("math", "\\boxed{3}", "3", {})], workers=2)[0].status == "ok"


def test_attacks_through_score_batch_all_zero():
    items = [("code", fenced(p), s, FAST) for p, s in [(EXIT_EARLY, CHECK), (ATEXIT_FORGE, CALL), (ALWAYS_EQUAL, CHECK)]]
    assert [r.score for r in score_batch(items, workers=2)] == [0.0, 0.0, 0.0]


def test_isolation_report_on_this_machine():
    rep = isolation_report()
    assert rep["empty_environment"] is True
    if os.geteuid() == 0 and rep["namespaces"] == "root":  # what this project's machines provide
        assert rep["uid"] == 65534 and rep["network_isolated"] and rep["pid_namespace"]
        assert rep["process_limit"] == "pids cgroup" or rep["cgroup"] is None


LEAK = (
    "import gc, os, sys\n"
    "PREFIX = 's3' + 'cret-'\n"
    "def find(text):\n"
    "    i = text.find(PREFIX)\n"
    "    while i >= 0:\n"
    "        tail = text[i + len(PREFIX) : i + len(PREFIX) + 8]\n"
    "        if len(tail) == 8 and all(c in '0123456789abcdef' for c in tail):\n"
    "            return PREFIX + tail\n"
    "        i = text.find(PREFIX, i + 1)\n"
    "    return None\n"
    "def sources():\n"
    "    for obj in gc.get_objects():\n"
    "        if isinstance(obj, dict):\n"
    "            yield from (v for v in obj.values() if isinstance(v, str))\n"
    "        elif isinstance(obj, (list, tuple)):\n"
    "            yield from (v for v in obj if isinstance(v, str))\n"
    "    f = sys._getframe()\n"
    "    while f is not None:\n"
    "        yield from (v for v in f.f_locals.values() if isinstance(v, str))\n"
    "        f = f.f_back\n"
    "    for pid in {1, os.getppid()}:\n"
    "        for name in ('cmdline', 'environ', 'maps'):\n"
    "            try:\n"
    "                yield open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')\n"
    "            except OSError:\n"
    "                pass\n"
    "        try:\n"
    "            mem = os.open(f'/proc/{pid}/mem', os.O_RDONLY)\n"
    "            for line in open(f'/proc/{pid}/maps'):\n"
    "                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
    "                try:\n"
    "                    yield os.pread(mem, min(hi - lo, 1 << 24), lo).decode('latin-1')\n"
    "                except OSError:\n"
    "                    pass\n"
    "        except OSError:\n"
    "            pass\n"
    "        for fd in range(64):\n"
    "            try:\n"
    "                yield open(f'/proc/{pid}/fd/{fd}', 'rb').read(1 << 20).decode('latin-1')\n"
    "            except OSError:\n"
    "                pass\n"
    "    for name in os.listdir('.'):\n"
    "        try:\n"
    "            yield open(name, 'rb').read().decode('latin-1')\n"
    "        except OSError:\n"
    "            pass\n"
    "def leak():\n"
    "    for text in sources():\n"
    "        if find(text):\n"
    "            return find(text)\n"
    "    return 'not found'\n"
)


def test_the_test_never_reaches_the_program():
    """check kind: the program searches its memory, its frames, the harness's /proc files and memory, and its
    directory for the expected value, which only the test holds."""
    expected = "s3cret-" + secrets.token_hex(4)
    spec = {"kind": "check", "entry_point": "leak", "test": f"def check(candidate):\n    got = candidate()\n    assert got == {expected!r}, got\n"}
    r = CODE(LEAK, spec, **FAST)
    assert (r.score, r.status) == (0.0, "wrong")
    assert "not found" in r.info["first_failure"]  # it ran to the end and found nothing


def test_host_untouched_after_every_attack(monkeypatch, tmp_path):
    """All attacks in one batch through the reward workers; then: no file outside the sandbox, no process
    left behind, the workers (the sandboxes' parents) alive and unchanged, and the secret never seen."""
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    monkeypatch.setenv("PURERL_TEST_SECRET", secret)
    rewards.close_pool()  # new workers carry the secret in their environment, as a trainer's would
    score_batch([("math", "\\boxed{1}", "1", {})], workers=2)
    pool = rewards.pool._POOL
    workers_before = [w.proc.pid for w in pool.workers]
    marker = f"attack{secrets.token_hex(4)}"
    targets = [f"/tmp/purerl_escape_{marker}", str(tmp_path / "escape.txt"), os.path.join(os.path.dirname(rewards.__file__), f"{marker}.txt"),
               os.path.expanduser(f"~/{marker}.txt")]
    writer = "def add(a, b):\n    n = 0\n" + "".join(
        f"    try:\n        open({t!r}, 'w').write('x')\n        n += 1\n    except OSError:\n        pass\n" for t in targets
    ) + "    return n\n"
    env_reader = (
        "import os\n"
        "def add(a, b):\n"
        "    found = os.environ.get('PURERL_TEST_SECRET', '')\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            for kv in open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace').split('\\0'):\n"
        "                if kv.startswith('PURERL_TEST_SECRET='):\n"
        "                    found = kv.split('=', 1)[1]\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n"
    )
    bomb = f"# {marker}\nimport os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    daemon = daemon_program(marker, "0")
    killer = "import os, signal\ndef add(a, b):\n    for pid in (-1, os.getppid(), 1):\n        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return 0\n"
    attacks = {
        "exit": (EXIT_EARLY, CHECK), "os_exit": (OS_EXIT_IN_CALL, CALL), "atexit": (ATEXIT_FORGE, CHECK),
        "always_equal": (ALWAYS_EQUAL, CHECK), "frame_walk": (FRAME_WALK, CHECK),
        "writer": (writer, {"kind": "call", "fn_name": "add", "cases": [{"args": [0, 0], "output": len(targets)}]}),
        "env": (env_reader, {"kind": "call", "fn_name": "add", "cases": [{"args": [0, 0], "output": secret}]}),
        "fork_bomb": (bomb, CALL), "daemon": (daemon, CALL), "killer": (killer, CALL),
    }
    items = [("code", fenced(prog), spec, {"time_limit_s": 2.0}) for prog, spec in attacks.values()]
    out = score_batch(items, workers=2, timeout_s=30)
    assert {name: r.score for name, r in zip(attacks, out)} == dict.fromkeys(attacks, 0.0)
    assert all(r.status == "wrong" for r in out), out
    time.sleep(0.3)
    assert [t for t in targets if os.path.exists(t)] == []
    assert procs_with(marker) == []
    assert [w.proc.pid for w in pool.workers] == workers_before and all(w.proc.poll() is None for w in pool.workers)
    assert [r.status for r in score_batch([("math", "\\boxed{2}", "2", {})] * 2, workers=2)] == ["ok", "ok"]
    rewards.close_pool()
