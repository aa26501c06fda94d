"""Where a run's outputs live: a local folder, written in place, or a URI (`s3://`, `gs://`, `hdfs://`, anything
`pyarrow.fs` resolves, with its options in the query: `s3://bucket/run?endpoint_override=host:port&scheme=http`),
written through a local staging copy and uploaded.

Uploads happen after each step (what changed: metrics, samples, eval files, TensorBoard events), after each
checkpoint (its files, then a COMPLETE marker last, so a half-uploaded one is never taken for complete; the
remote ones past run.keep_last pruned), and at the end (summary, plots, the final policy, logs). Credentials come
from where pyarrow looks: the environment (AWS_ACCESS_KEY_ID, ...) and the provider's config files.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rl.errors import UserError

COMPLETE = "COMPLETE"  # written into a remote checkpoint folder after every other file of it


def cache_root() -> Path:
    """Where the staging copies of remote runs live (one folder per URI): $PURERL_CACHE, else ~/.cache/purerl, never
    the working directory (under `make submit` that is Ray's temporary copy of the job)."""
    return Path(os.environ.get("PURERL_CACHE") or Path.home() / ".cache" / "purerl") / "runs"


class StorageError(UserError):
    """A run location that cannot be reached, read or written: the message names the URI and the reason."""


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class RunStorage:
    """One run's location. `local` is where the run writes (the folder itself, or the staging copy of a URI)."""

    def __init__(self, location: str):
        self.location = location
        self.remote = is_uri(location)
        if self.remote:
            self.fs, self.base = _filesystem(location)
            self.local = cache_root() / hashlib.sha256(location.encode()).hexdigest()[:16]
        else:
            self.fs, self.base = None, ""
            self.local = Path(location.removeprefix("file://"))
        self.uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) as last uploaded

    def display(self) -> str:
        """The run's location as the console says it: the URI, or the folder's absolute path."""
        return self.location if self.remote else str(self.local.resolve())

    def where(self, rel: str) -> str:
        """Where `rel` lives, as said on the console: its URI without the query, or its absolute path."""
        return f"{self.location.split('?')[0].rstrip('/')}/{rel}" if self.remote else str(self.local.resolve() / rel)

    def uri(self, rel: str) -> str | None:
        """`rel`'s full URI (the query kept, so another process can open it), or None for a local run."""
        if not self.remote:
            return None
        head, _, query = self.location.partition("?")
        return f"{head.rstrip('/')}/{rel}" + (f"?{query}" if query else "")

    # ---- checks before anything starts

    def check_writable(self) -> None:
        """Writes and deletes a probe object; StorageError naming the URI and the reason if that fails."""
        if not self.remote:
            return
        probe = posixpath.join(self.base, ".purerl-probe")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError subclasses with long messages
            raise StorageError(f"run.dir {self.location} cannot be written: {_first_line(e)}") from None

    def exists(self, rel: str) -> bool:
        if not self.remote:
            return (self.local / rel).exists()
        from pyarrow.fs import FileType

        return self._info(rel).type != FileType.NotFound

    # ---- uploads

    def sync(self, skip: tuple[str, ...] = ("checkpoints/", "checkpoint/", "logs/")) -> int:
        """Uploads every file under `local` that changed since it was last uploaded, except under `skip`;
        returns how many."""
        if not self.remote:
            return 0
        n = 0
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local).as_posix()
            if rel.startswith(skip) or rel.endswith((".tmp", ".old")) or ".tmp/" in rel:
                continue
            stat = path.stat()
            if self.uploaded.get(rel) == (stat.st_size, stat.st_mtime_ns):
                continue
            self.upload(path, rel)
            self.uploaded[rel] = (stat.st_size, stat.st_mtime_ns)
            n += 1
        return n

    def push_folder(self, rel: str) -> None:
        """Uploads the local folder `rel` (a checkpoint, the final policy): its files (those the trainer ranks did
        not upload themselves), then COMPLETE last."""
        if not self.remote:
            return
        folder = self.local / rel
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.upload(path, path.relative_to(self.local).as_posix())
        with self.fs.open_output_stream(posixpath.join(self.base, rel, COMPLETE)) as f:
            f.write(b"")

    def clear(self, rel: str) -> None:
        """Removes the remote folder `rel` (its COMPLETE marker first), before it is written again."""
        if not self.remote:
            return
        from pyarrow.fs import FileType

        folder = posixpath.join(self.base, rel)
        if self.fs.get_file_info(folder).type == FileType.NotFound:
            return
        if self.fs.get_file_info(posixpath.join(folder, COMPLETE)).type == FileType.File:
            self.fs.delete_file(posixpath.join(folder, COMPLETE))
        self.fs.delete_dir(folder)

    def prune(self, keep: list[str]) -> None:
        """Deletes the remote checkpoints not in `keep` (relative folders, e.g. checkpoints/step-000004)."""
        if not self.remote:
            return
        for rel in self.remote_checkpoints():
            if rel not in keep:
                self.fs.delete_dir(posixpath.join(self.base, rel))

    def remote_checkpoints(self) -> list[str]:
        """Complete remote checkpoints (their COMPLETE marker uploaded), oldest first."""
        from pyarrow.fs import FileSelector, FileType

        root = posixpath.join(self.base, "checkpoints")
        if self.fs.get_file_info(root).type == FileType.NotFound:
            return []
        out = []
        for info in self.fs.get_file_info(FileSelector(root)):
            name = posixpath.basename(info.path)
            if info.type == FileType.Directory and name.startswith("step-") and \
                    self.fs.get_file_info(posixpath.join(info.path, COMPLETE)).type == FileType.File:
                out.append(f"checkpoints/{name}")
        return sorted(out)

    # ---- downloads

    def pull(self, rel: str) -> Path:
        """The remote file or folder `rel` in the local copy (downloaded); the local path."""
        if not self.remote:
            return self.local / rel
        from pyarrow.fs import FileSelector, FileType

        src = posixpath.join(self.base, rel)
        info = self.fs.get_file_info(src)
        if info.type == FileType.NotFound:
            raise StorageError(f"{self.where(rel)} does not exist")
        files = [info] if info.type == FileType.File else \
            [i for i in self.fs.get_file_info(FileSelector(src, recursive=True)) if i.type == FileType.File]
        for f in files:
            dst = self.local / posixpath.relpath(f.path, self.base)
            if dst.is_file() and dst.stat().st_size == f.size:
                continue  # already here (pulled before, or written on this node)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f.path) as r, open(dst, "wb") as w:
                while chunk := r.read(1 << 22):
                    w.write(chunk)
            stat = dst.stat()
            self.uploaded[posixpath.relpath(f.path, self.base)] = (stat.st_size, stat.st_mtime_ns)
        return self.local / rel

    def pull_for_resume(self) -> None:
        """What a resumed run reads: the last complete checkpoint, the metrics, the config and the base accuracy."""
        if not self.remote:
            return
        found = self.remote_checkpoints()
        if not found:
            raise StorageError(f"run.resume: {self.location} has no complete checkpoint (set run.save_every to "
                               f"write them)")
        for rel in ("metrics.jsonl", "config.yaml", "base_accuracy.json"):
            if self.exists(rel):
                self.pull(rel)
        self.pull(found[-1])

    def upload(self, path: Path, rel: str) -> None:
        """The local file `path` as the remote file `rel`."""
        dst = posixpath.join(self.base, rel)
        self.fs.create_dir(posixpath.dirname(dst), recursive=True)
        with open(path, "rb") as r, self.fs.open_output_stream(dst) as w:
            while chunk := r.read(1 << 22):
                w.write(chunk)

    def _info(self, rel: str):
        return self.fs.get_file_info(posixpath.join(self.base, rel))


def _filesystem(uri: str):
    """pyarrow's filesystem and path for a URI; StorageError with one line when it cannot be resolved."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - an unknown scheme, a malformed query
        raise StorageError(f"run location {uri} cannot be resolved: {_first_line(e)}") from None


def upload_written(write: Callable[[Path], None], uri: str) -> None:
    """Calls `write(folder)` on a private temporary folder, uploads what it wrote under the folder URI `uri`, and
    removes it: how a trainer rank puts its part of a checkpoint into a remote run from whichever node it is on,
    without the driver's staging copy (which lives on the driver's node)."""
    store, name = _parent(uri)
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="upload-", dir=cache_root()))
    try:
        write(tmp)
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            store.upload(path, f"{name}/{path.relative_to(tmp).as_posix()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(location: str) -> Path:
    """A local folder holding what `location` (a local path or a URI of a folder, e.g. a run's checkpoint) holds:
    itself, or its download into the staging cache (make eval CKPT=, a trainer rank resuming on another node)."""
    if not is_uri(location):
        return Path(location.removeprefix("file://"))
    store, name = _parent(location)
    return store.pull(name)


def _parent(uri: str) -> tuple[RunStorage, str]:
    """The storage of a folder URI's parent, and the folder's name."""
    parent, _, name = uri.split("?")[0].rstrip("/").rpartition("/")
    query = uri.partition("?")[2]
    return RunStorage(f"{parent}?{query}" if query else parent), name


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


