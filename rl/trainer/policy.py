"""Loading the policy (and the frozen reference) and saving checkpoints in Hugging Face format."""

from __future__ import annotations

from pathlib import Path

import torch

from rl.errors import UserError


class ModelPathError(UserError):
    """The model path is neither a local Hugging Face folder nor a loadable hub id."""


def resolve_model_path(path: str) -> str:
    """A local folder must hold config.json; anything else is tried as a hub id (fails clearly offline)."""
    p = Path(path)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelPathError(f"model path {path!r} exists but has no config.json (not a Hugging Face model folder)")
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
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
