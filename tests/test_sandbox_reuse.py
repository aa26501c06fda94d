"""The sandbox zygote (rewards/code/zygote.py): programs forked from one long-lived zygote must not see each other.

Program A leaves something behind (files, processes, environment, memory, SysV IPC, an abstract socket) and
program B, forked next from the same zygote, looks for it. Each test checks that B ran in the same zygote as A,
so it is the reuse that is under test, not two separate sandboxes.
"""

import json
import os
import secrets
import time

import pytest

from rewards import get_verifier
from rewards.code import zygote
from rewards.code.sandbox import Limits, detect_isolation, run_sandboxed

ISO = detect_isolation()
KEY = (ISO, ())  # the zygote of the default policy (no packages in view)
pytestmark = pytest.mark.skipif(not (ISO.namespaces == "root" and ISO.cgroup),
                                reason=f"the zygote needs namespaces as root and cgroups; here: {ISO}")


def call(program: str, *args):
    """Run `f(*args)` in the sandbox; returns (its result or error, the pid of the zygote it ran in)."""
    r = run_sandboxed({"kind": "call", "program": program, "fn_name": "f", "cases": [list(args)]})
    rec = r.records[0] if r.records else {"error": r.stderr.decode()[-300:]}
    return (json.loads(rec["result"]) if "result" in rec else rec), zygote._ZYGOTES[KEY].proc.pid


def test_files_do_not_cross():
    token = secrets.token_hex(4)
    writer = ("import os\ndef f(t):\n    n = 0\n"
              "    for d in ('/tmp', '/dev/shm', '/var/tmp', '.'):\n"
              "        try:\n            open(os.path.join(d, t), 'w').write('x')\n            n += 1\n"
              "        except OSError:\n            pass\n    return n\n")
    reader = ("import os\ndef f(t):\n"
              "    return [d for d in ('/tmp', '/dev/shm', '/var/tmp', '.', '/tmp/w') if os.path.exists(os.path.join(d, t))]\n")
    wrote, za = call(writer, token)
    found, zb = call(reader, token)
    assert za == zb and wrote == 4  # A could write its scratch space...
    assert found == []  # ...and B, forked from the same zygote, finds none of it


def test_processes_do_not_cross():
    marker = f"lingers{secrets.token_hex(4)}"
    leaver = ("import os, sys, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
              f"            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
              "        os._exit(0)\n    time.sleep(0.3)\n    return os.getpid()\n")
    looker = ("import os\ndef f(m):\n    seen = []\n    for p in filter(str.isdigit, os.listdir('/proc')):\n        try:\n"
              "            seen.append(open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace'))\n"
              "        except OSError:\n            pass\n    return [len(seen), any(m in s for s in seen)]\n")
    _, za = call(leaver)
    (count, seen), zb = call(looker, marker)
    assert za == zb and not seen
    assert count <= 2  # B's namespace holds B's harness and B: no zygote, no earlier program


def test_environment_and_memory_do_not_cross():
    secret = "s3cret-" + secrets.token_hex(4)
    keeper = (f"import os, sys, builtins\nKEPT = {secret!r}\n"
              "def f():\n    os.environ['PURERL_LEFT'] = KEPT\n    os.putenv('PURERL_LEFT', KEPT)\n"
              "    builtins.purerl_left = KEPT\n    sys.modules['purerl_left'] = KEPT\n    return len(KEPT)\n")
    assert call(keeper)[0] == len(secret)
    looker = ("import os, sys, builtins\ndef f():\n"
              "    return [os.environ.get('PURERL_LEFT'), getattr(builtins, 'purerl_left', None), 'purerl_left' in sys.modules]\n")
    assert call(looker)[0] == [None, None, False]
    # the strongest look: B searches its heap, frames, /proc of its parents and their memory for A's secret
    from tests.test_rewards_code import LEAK

    found, zb = call(LEAK.replace("def leak():", "def f():"))
    assert found == "not found" and zb == zygote._ZYGOTES[KEY].proc.pid


SHM = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nKEY = 0x5075726c\n"
       "def f(create):\n"
       "    if create:\n"
       "        shm = libc.shmget(KEY, 4096, 0o1000 | 0o666)\n"  # IPC_CREAT
       "        return shm >= 0\n"
       "    return libc.shmget(KEY, 0, 0) >= 0\n")


def test_sysv_ipc_and_abstract_sockets_do_not_cross():
    made, za = call(SHM, True)
    seen, zb = call(SHM, False)
    assert za == zb and made is True and seen is False  # SysV IPC outlives its process: hence a new IPC namespace
    name = "purerl" + secrets.token_hex(4)
    listener = ("import socket, os, time\ndef f(n):\n    s = socket.socket(socket.AF_UNIX)\n    s.bind('\\0' + n)\n"
                "    s.listen()\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(60)\n    return 'bound'\n")
    connector = ("import socket\ndef f(n):\n    try:\n        socket.socket(socket.AF_UNIX).connect('\\0' + n)\n"
                 "        return 'connected'\n    except OSError:\n        return 'refused'\n")
    assert call(listener, name)[0] == "bound"
    assert call(connector, name)[0] == "refused"


def test_zygote_survives_what_programs_do_and_is_replaced_when_killed():
    killer = ("import os, signal\ndef f():\n    for pid in (-1, os.getppid(), 1):\n        try:\n"
              "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return 0\n")
    call(killer)
    before = zygote._ZYGOTES[KEY].proc.pid
    t0 = time.monotonic()
    r = run_sandboxed({"kind": "call", "program": "def f():\n    while True:\n        pass\n", "fn_name": "f", "cases": [[]]},
                      limits=Limits(wall_s=1.0, cpu_s=10))  # the wall clock, not RLIMIT_CPU, ends it
    assert r.timed_out and r.records == [] and time.monotonic() - t0 < 5
    assert call("def f():\n    return 7\n") == (7, before)  # same zygote after a kill-all and a timeout
    os.killpg(before, 9)
    zygote._ZYGOTES[KEY].proc.wait()
    result, after = call("def f():\n    return 8\n")
    assert result == 8 and after != before


def test_a_zygote_killed_mid_program_fails_that_program_only():
    """Its program ends as an infrastructure failure (an `error` to the verifier, never a score); the next one
    runs in a new zygote."""
    import threading

    call("def f():\n    return 0\n")  # this thread's zygote exists
    zyg = zygote._ZYGOTES[KEY]
    out = {}

    def slow():
        try:
            out["result"] = run_sandboxed({"kind": "call", "program": "import time\ndef f():\n    time.sleep(3)\n    return 1\n",
                                           "fn_name": "f", "cases": [[]]})
        except OSError as e:
            out["error"] = e

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    os.killpg(zyg.proc.pid, 9)
    thread.join(10)
    assert isinstance(out.get("error"), zygote.ZygoteError), out
    assert call("def f():\n    return 9\n")[0] == 9 and zygote._ZYGOTES[KEY] is not zyg


def test_the_code_verifier_scores_the_same_with_and_without_reuse():
    code = get_verifier("code")
    spec = {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "9"}]}
    prog = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    with_reuse = code(prog, spec)
    assert (with_reuse.score, with_reuse.info["passed"]) == (0.5, 1)
    one_off = [run_sandboxed({"kind": "stdio", "program": "print(sum(map(int, input().split())))\n"}, stdin=b"5 5\n",
                             reuse=reuse).stdout for reuse in (True, False)]
    assert one_off == [b"10\n", b"10\n"]


def test_a_batch_runs_each_program_once():
    """score_batch scores the items the code verifier's answer_key calls the same answer once: the same program
    (whatever reasoning surrounds it) on the same tests with the same arguments."""
    from rewards.code.verifier import answer_key
    from rewards.pool import first_of_each, score_batch

    spec = {"kind": "call", "fn_name": "f", "cases": [{"args": [2], "output": 4}, {"args": [3], "output": 9}]}
    right, wrong = "```python\ndef f(x):\n    return x * x\n```", "```python\ndef f(x):\n    return 2 * x\n```"
    items = [("code", right, spec, {}), ("code", f"<think>another way</think> {right}", spec, {}), ("code", wrong, spec, {}),
             ("code", right, spec, {"time_limit_s": 4.0}), ("code", right, {**spec, "cases": spec["cases"][:1]}, {}),
             ("format", right, spec, {}), ("format", right, spec, {})]
    keys = [None if name == "format" else answer_key(r, ref, meta) for name, r, ref, meta in items]
    assert first_of_each(keys) == [0, 0, 2, 3, 4, 5, 6]  # one run for the first two; other args or tests run again
    out = score_batch(items, workers=2)
    assert [r.score for r in out[:5]] == [1.0, 1.0, 0.5, 1.0, 1.0] and out[1] == out[0] and out[1] is not out[2]
