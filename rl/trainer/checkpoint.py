"""Resumable checkpoints: policy weights (a Hugging Face folder vLLM can load), optimizer, LR schedule, RNG
states and the data cursor. Written under a temporary name and renamed, so a half-written one is never loaded, with a
manifest of its files' sizes and checksums (rl.trainer.manifest) last; a write that fails leaves the previous
checkpoint as it was.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rl.errors import UserError
from rl.trainer.manifest import folder_bytes, write_manifest

STATE = "train_state.pt"


class CheckpointWriteError(UserError):
    """A checkpoint that could not be written (a full disk, a quota): names the folder and the bytes it needs."""


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yields `out` + ".tmp" to write into; it becomes `out` only when the block finishes, so `out` is always
    whole: the old one (if any) is moved aside, the new one renamed in, then the old one removed."""
    out = Path(out)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted write
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # what a failed write left takes no space from the next one
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def save_policy(trainer, tokenizer, out: Path, upload: str | None = None) -> Path:
    """The policy as a Hugging Face folder (no optimizer state), written atomically. `upload`: the folder's URI in
    a remote run, where the trainer puts its weights from its own node (the tokenizer stays in `out`)."""
    with atomic_folder(out) as tmp:
        trainer.save(tmp, with_state=False, upload=upload)
        tokenizer.save_pretrained(tmp)
    return out


def checkpoint_folder(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def save_train_state(run_dir: Path, step: int, trainer, tokenizer, cursor: dict, keep_last: int,
                     upload: str | None = None) -> Path:
    """`trainer` writes the weights, optimizer, LR schedule and its ranks' RNG states; the driver adds the data
    `cursor` (EpochSampler.state_dict), its own RNG state and the manifest, last, so the folder is complete once
    renamed. `upload`: as in save_policy (the driver's files are uploaded after, with the COMPLETE marker last).
    CheckpointWriteError when the write fails; the previous checkpoints are then as they were."""
    out = checkpoint_folder(run_dir, step)
    try:
        with atomic_folder(out) as tmp:
            trainer.save(tmp, upload=upload)
            tokenizer.save_pretrained(tmp)
            torch.save({"step": step, "sampler": cursor, "torch_rng": torch.get_rng_state(),
                        "python_rng": random.getstate()}, tmp / STATE)
            write_manifest(tmp)
    except Exception as e:
        from ray.exceptions import RayActorError

        if isinstance(e, RayActorError):  # a rank lost while writing: not a write that failed
            raise
        raise write_failure(run_dir, out, e) from e
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)
    return out


def write_failure(run_dir: Path, out: Path, e: Exception) -> CheckpointWriteError:
    """The error for a checkpoint write that failed with `e`: the folder, the bytes it needs (the size of the last
    checkpoint), the space free there, and which checkpoint is still whole."""
    last = complete_checkpoints(run_dir)
    free = shutil.disk_usage(out.parent if out.parent.exists() else run_dir).free
    needs = (f"it needs about {folder_bytes(last[-1])} bytes (the size of {last[-1].name}); {free} are free there; "
             f"{last[-1]} is intact" if last else f"{free} bytes are free there; there is no earlier checkpoint")
    cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return CheckpointWriteError(f"writing the checkpoint {out} failed ({type(e).__name__}: {cause}): {needs}")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a `.tmp` or `.old` folder is an interrupted write, a `.damaged` one failed
its manifest: neither counts)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and "." not in p.name
                  and (p / STATE).is_file())


def read_state(file: Path) -> dict:
    """A checkpoint's torch-saved state; UserError naming the file when it is missing or damaged."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{file} is missing: not a complete purerl checkpoint")
    try:
        state = torch.load(file, weights_only=False)
    except Exception as e:  # noqa: BLE001 - a truncated zip, a pickle error, anything that is not the file we wrote
        raise UserError(f"{file} is damaged (a partial write or a copy cut short?): {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a purerl checkpoint's state")
    return state


def checkpoint_step(path: Path) -> int:
    """The step a complete checkpoint was taken after (its weights' version)."""
    return int(read_state(Path(path) / STATE)["step"])


def load_train_state(path: Path, trainer, sampler, trainer_from: str | None = None) -> int:
    """Restores everything but the weights (loaded from `path` as the policy); returns the checkpoint's step.
    `trainer_from`: where the trainer reads its part, if not `path` (a remote checkpoint's URI)."""
    trainer.load_state(trainer_from or path)
    state = read_state(path / STATE)
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state["step"]
