"""Loading the policy (and the frozen reference) and saving checkpoints in Hugging Face format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rl.errors import UserError


class ModelPathError(UserError):
    """The model path is neither a local Hugging Face folder nor a loadable hub id."""


def resolve_model_path(path: str) -> str:
    """A local folder must be a whole Hugging Face model folder (`check_model_folder`); anything else is tried as a
    hub id (fails clearly offline)."""
    p = Path(path)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelPathError(f"model path {path!r} exists but has no config.json (not a Hugging Face model folder)")
        check_model_folder(p)
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelPathError(
            f"model path {path!r} not found. For the embedded default run `make base-model`; "
            "otherwise give a local Hugging Face folder or a hub id like org/name"
        )
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path)
    except Exception as e:
        raise ModelPathError(f"model {path!r} is not a local folder and could not be fetched from the hub: {e}") from e


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def check_model_folder(folder: Path) -> None:
    """ModelPathError naming the file and what is wrong, before any engine starts: config.json (and tokenizer.json)
    valid JSON, a weights file whose safetensors headers read and cover the file (a truncated copy does not), and
    the tokenizer's files."""
    config = _json_file(folder / "config.json")
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelPathError(f"{folder / 'config.json'} names no model_type: not a transformers model config")
    if not any((folder / w).is_file() for w in WEIGHTS):
        raise ModelPathError(f"no weights in {folder}: none of {', '.join(WEIGHTS)}")
    for f in sorted(folder.glob("*.safetensors")):
        _check_safetensors(f)
    if not any((folder / t).is_file() for t in TOKENIZER):
        raise ModelPathError(f"the tokenizer is missing: no {' or '.join(TOKENIZER)} in {folder}")
    for t in TOKENIZER:
        if (folder / t).is_file():
            _json_file(folder / t)


def _json_file(path: Path):
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ModelPathError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ModelPathError(f"{path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt"):
            pass
    except Exception as e:  # noqa: BLE001 - SafetensorError, or an OSError for an unreadable file
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise ModelPathError(f"{path} is damaged or incomplete (a truncated copy?): {reason}") from None


def load_policy(path: str, dtype: str, trainable: bool = True, experts: str = "purerl"):
    """`experts`: the MoE experts implementation (model.experts_implementation; no effect on a dense model)."""
    from transformers import AutoModelForCausalLM

    from rl.trainer.experts import register

    register()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), experts_implementation=experts)
    return _mode(model, trainable)


def empty_policy(path: str, dtype: str, trainable: bool = True, experts: str = "purerl"):
    """The model of `path` on the meta device, with no weights read (its shards come from rank 0)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rl.trainer.experts import register

    register()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=getattr(torch, dtype),
                                                 experts_implementation=experts)
    return _mode(model, trainable)


def _mode(model, trainable: bool):
    model.train(trainable)
    if not trainable:
        model.requires_grad_(False)
    return model


def load_tokenizer(path: str):
    """The model's tokenizer (a pad token set to EOS where it has none); ModelPathError when it does not load."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, JSON errors, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelPathError(f"the tokenizer in {path} does not load: {type(e).__name__}: {first[:300]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
