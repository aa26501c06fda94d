"""Checkpoints that prove themselves: each one lists its files with sizes and SHA-256; a resume skips a newest one
that was cut short or changed since, naming the file, for the newest intact one; a write that fails names the
folder and the bytes it needs and leaves the previous checkpoint whole. A real trainer writes real checkpoints."""

import hashlib
import json
import resource
import signal

import pytest

from rl.config import load_config
from rl.errors import UserError
from rl.run.resume import resume_point
from rl.trainer.checkpoint import CheckpointWriteError, complete_checkpoints, save_train_state
from rl.trainer.manifest import MANIFEST, manifest_problem
from rl.trainer.policy import load_tokenizer
from rl.trainer.rank import Trainer

MODEL = "models/tiny-moe-base"
CURSOR = {"epoch": 0, "position": 8}


@pytest.fixture(scope="module")
def trainer():
    return Trainer(load_config("configs/tiny.yaml"), MODEL, MODEL), load_tokenizer(MODEL)


def save(run_dir, step, trainer):
    return save_train_state(run_dir, step, *trainer, CURSOR, keep_last=5)


def test_the_manifest_lists_every_file_with_its_size_and_checksum(tmp_path, trainer):
    ckpt = save(tmp_path, 1, trainer)
    files = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert set(files) == {p.name for p in ckpt.iterdir()} - {MANIFEST}
    assert {"model.safetensors", "trainer_state.pt", "train_state.pt", "tokenizer.json"} <= set(files)
    state = (ckpt / "train_state.pt").read_bytes()
    assert files["train_state.pt"] == {"bytes": len(state), "sha256": hashlib.sha256(state).hexdigest()}
    assert manifest_problem(ckpt) is None


def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, trainer, capsys):
    for step in (1, 2, 3):
        save(tmp_path, step, trainer)
    weights = tmp_path / "checkpoints" / "step-000003" / "model.safetensors"
    half = weights.stat().st_size // 2
    weights.write_bytes(weights.read_bytes()[:half])  # a partial disk
    optimizer = tmp_path / "checkpoints" / "step-000002" / "trainer_state.pt"
    raw = bytearray(optimizer.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit: same size, another checksum
    optimizer.write_bytes(bytes(raw))

    assert resume_point(tmp_path).name == "step-000001"
    said = capsys.readouterr().out
    assert f"{weights} has {half} bytes, the manifest says" in said
    assert f"{optimizer} does not match its SHA-256 in the manifest" in said
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000001"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000001", "step-000002.damaged", "step-000003.damaged"]

    (tmp_path / "checkpoints" / "step-000001" / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=r"every checkpoint of .* is damaged: .*tokenizer.json is missing"):
        resume_point(tmp_path)


def test_a_failed_checkpoint_write_names_the_folder_and_bytes_and_keeps_the_last(tmp_path, trainer):
    first = save(tmp_path, 1, trainer)
    size = sum(p.stat().st_size for p in first.iterdir())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # the weights alone are 7.6 MB
    try:
        with pytest.raises(CheckpointWriteError) as err:
            save(tmp_path, 2, trainer)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    message = str(err.value)
    assert f"writing the checkpoint {tmp_path / 'checkpoints' / 'step-000002'} failed" in message
    assert f"it needs about {size} bytes (the size of step-000001)" in message and f"{first} is intact" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]  # no partial folder left
    assert manifest_problem(first) is None and resume_point(tmp_path) == first
