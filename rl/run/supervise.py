"""run.supervise: the driver under a small supervisor. The supervisor starts `python -m rl.train` with the same
config as a child process and, after an abnormal exit (a SIGKILL, an OOM kill, a crash, lost engines), resumes the
same run directory from its last checkpoint, up to run.max_restarts times, with no person acting. It stops, with
the reason, on a user error (exit status 2: a bad config, dataset or model path), which a restart cannot fix.
Under `make submit` it is the job's entrypoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rl.config import Config
from rl.run.console import say
from rl.storage import is_uri

USER_ERROR = 2  # python -m rl.train's exit status for a config error or a UserError


def how_it_ended(status: int) -> str:
    return f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"


def next_move(status: int, restarts: int, max_restarts: int, has_checkpoint: bool, local: bool) -> str:
    """What the supervisor does after the driver exited with `status`, `restarts` restarts in: "done", "stop"
    (a user error, no restart left, or a remote run with no checkpoint yet), "resume" (from the last checkpoint)
    or "start over" (a local run with none yet)."""
    if status == 0:
        return "done"
    if status == USER_ERROR or restarts >= max_restarts or not (has_checkpoint or local):
        return "stop"
    return "resume" if has_checkpoint else "start over"


def has_checkpoint(run_dir: str) -> bool:
    from rl.storage import RunStorage
    from rl.trainer.checkpoint import complete_checkpoints

    storage = RunStorage(run_dir)
    return bool(storage.remote_checkpoints() if storage.remote else complete_checkpoints(storage.local))


def run_driver(cmd: list[str]) -> int:
    """Runs the driver in its own process group and returns its exit status; SIGINT and SIGTERM are passed on to
    it. Whatever it started and left behind (a local Ray instance, engines) is killed with its group after."""
    child = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum, _frame):
        os.killpg(child.pid, signum)

    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return status


def supervise(config_path: str, overrides: list[str], cfg: Config) -> int:
    """Runs the driver until it finishes, resuming after each abnormal exit (next_move); the exit status of the
    last attempt. A finished local run's summary.json records the restarts under `supervisor`."""
    run_dir = cfg.run.dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    base = [sys.executable, "-m", "rl.train", "--config", config_path, *overrides, "run.supervise=false",
            f"run.dir={run_dir}"]
    resume, exits, shown = cfg.run.resume, [], run_dir.split("?")[0]
    say(f"supervisor: {shown} runs under the supervisor, restarted up to {cfg.run.max_restarts} times")
    while True:
        t = time.time()
        status = run_driver(base + (["run.resume=true"] if resume else []))
        move = next_move(status, len(exits), cfg.run.max_restarts, status != 0 and has_checkpoint(run_dir),
                         not is_uri(run_dir))
        if move == "done":
            record(run_dir, exits)
            return 0
        exits.append(f"{how_it_ended(status)} after {time.time() - t:.0f} s")
        if move == "stop":
            why = ("a user error, which a restart cannot fix" if status == USER_ERROR else
                   f"run.max_restarts={cfg.run.max_restarts} restarts used" if len(exits) > cfg.run.max_restarts else
                   f"{shown} has no checkpoint to resume from yet (run.save_every={cfg.run.save_every})")
            say(f"supervisor: the run ended with {exits[-1]}; not restarted: {why}")
            return status if status >= 0 else 128 - status  # a signal's number, as a shell reports it
        say(f"supervisor: the run ended with {exits[-1]}; restart {len(exits)} of {cfg.run.max_restarts}: "
            + (f"resuming {shown} from its last checkpoint" if move == "resume" else start_over(run_dir, len(exits))))
        resume = move == "resume"


def start_over(run_dir: str, attempt: int) -> str:
    """Before the first checkpoint there is nothing to resume: a local run's partial outputs are moved aside and
    the run starts again from the beginning."""
    aside = f"{run_dir.rstrip('/')}.attempt-{attempt}"
    if Path(run_dir).exists():
        shutil.move(run_dir, aside)
    return f"no checkpoint yet, starting over (the partial outputs are in {aside})"


def record(run_dir: str, exits: list[str]) -> None:
    summary = Path(run_dir) / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        data["supervisor"] = {"restarts": len(exits), "exits": exits}
        summary.write_text(json.dumps(data, indent=2) + "\n")
