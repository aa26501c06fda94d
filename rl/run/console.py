"""What a run prints, and where everything else goes: purerl's own lines reach the console (its packages'
warnings too: an engine restarted, a reward worker replaced); vLLM's, Ray's, transformers' and torch's output goes
to <run dir>/logs/ (unless log.verbose), the engines' and trainer ranks' included (each actor writes its own file
there, rollout/logfile.py)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rollout.logfile import LOG_DIR_ENV


class Console:
    def __init__(self):
        self.stream = None  # None: sys.stdout as it is when a line is printed

    def say(self, line: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


CONSOLE = Console()
say = CONSOLE.say
OWN_LOGGERS = ("rl", "rollout", "rewards")


class SayHandler(logging.Handler):
    """purerl's own warnings, said on the console like its other lines."""

    def emit(self, record: logging.LogRecord) -> None:
        say(self.format(record))


@contextmanager
def third_party_to(log_dir: Path | None) -> Iterator[None]:
    """Within the block, this process's stdout and stderr (file descriptors 1 and 2, so C code and child
    processes too) go to log_dir/driver.log, and `say` writes to the console they were; on the way out (an
    error included, so its traceback reaches the console) both are put back. None: no change."""
    if log_dir is None:
        yield
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log = os.open(log_dir / "driver.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    CONSOLE.stream, previous_env = console, os.environ.get(LOG_DIR_ENV)
    os.environ[LOG_DIR_ENV] = str(log_dir.resolve())
    handler = SayHandler(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in OWN_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        CONSOLE.stream = None
        console.close()
        if previous_env is None:
            os.environ.pop(LOG_DIR_ENV, None)
        else:
            os.environ[LOG_DIR_ENV] = previous_env
