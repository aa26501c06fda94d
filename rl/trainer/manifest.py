"""A checkpoint's manifest: each of its files with its size and SHA-256, written last into the folder, so that a
resume can tell a whole checkpoint from one cut short or changed since (a partial disk, a flipped byte)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"
_CHUNK = 1 << 22


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every file under `folder` but the manifest, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> dict[str, dict]:
    """Writes `folder`/manifest.json: {relative path: {"bytes", "sha256"}} of every other file; returns it."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
             for p in folder_files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
    return files


def manifest_problem(folder: Path) -> str | None:
    """None when every file the manifest lists is there with its size and checksum; else what failed, naming the
    file. A folder without a manifest (written before purerl kept them) is not checked."""
    listed = folder / MANIFEST
    if not listed.is_file():
        return None
    try:
        files = json.loads(listed.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{listed} is unreadable ({type(e).__name__})"
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{path} is missing"
        if (size := path.stat().st_size) != want["bytes"]:
            return f"{path} has {size} bytes, the manifest says {want['bytes']}"
        if sha256_of(path) != want["sha256"]:
            return f"{path} does not match its SHA-256 in the manifest"
    return None


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
