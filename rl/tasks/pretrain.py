"""What every embedded base model is built with: a byte-level BPE tokenizer, a short next-token pretraining on
a generated corpus, and an atomic save. Deterministic for a fixed seed."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rl.trainer.checkpoint import atomic_folder

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE; digits are split one per token so arithmetic stays learnable.

    Without the usual word-splitting regex, merges may cross spaces, so the fixed R1-Zero template
    becomes a handful of tokens: shorter sequences make every stage cheaper.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # the tags stay whole tokens of their own, so the prompt (which ends in "<think>") is
            # tokenized the same way alone as inside a pretraining document
            pre_tokenizers.Split(Regex(r"</?think>|</?answer>"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def _batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, labels (-100 on padding) and attention mask of token lists."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id)
    labels = torch.full((len(ids), width), -100)
    attn = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
    return input_ids, labels, attn


def pretrain(model, tokenizer, docs: list[str], *, batch_size: int, lr: float, seed: int, log_every: int = 50):
    """Next-token loss over whole documents (padding masked), AdamW with warm-up and cosine decay."""
    torch.manual_seed(seed)
    ids = [tokenizer(d)["input_ids"] for d in docs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    steps = len(ids) // batch_size
    model.train()
    t0 = time.time()
    for step in range(steps):
        input_ids, labels, attn = _batch(ids[step * batch_size : (step + 1) * batch_size], tokenizer.pad_token_id)
        for g in opt.param_groups:  # warm-up then cosine
            g["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        out = model(input_ids=input_ids, attention_mask=attn, labels=labels, output_router_logits=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == steps - 1:
            print(f"base-model: step {step + 1}/{steps} loss {out.loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()


def save(model, tokenizer, out: Path, recipe: dict) -> None:
    """The model, its tokenizer and the recipe that made it (purerl_base.json); the folder appears whole."""
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "purerl_base.json").write_text(json.dumps(recipe))
    print(f"base-model: wrote {out}", flush=True)


def qwen3_moe(vocab_size: int, eos_id: int):
    """The tiny Qwen3-MoE the embedded base models use by default: 4 layers, 8 experts of which 2 per token."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    return Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        router_aux_loss_coef=0.01,
        torch_dtype="float32",
    ))


def deepseek_v3(vocab_size: int, eos_id: int):
    """A tiny DeepSeek-V3 of the same width: multi-head latent attention (a 512 latent + 64 rope, the head vLLM's
    CPU MLA kernel compiles for), a first dense layer, then 8 routed experts in 2 groups (top-2 from the best
    group) plus a shared expert, sigmoid scores with the correction bias (docs/deepseek.md)."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    model = DeepseekV3ForCausalLM(DeepseekV3Config(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, moe_intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=512,
        qk_rope_head_dim=64, qk_nope_head_dim=32, v_head_dim=32, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1, routed_scaling_factor=1.0,
        norm_topk_prob=True, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=eos_id,
        eos_token_id=eos_id, pad_token_id=eos_id))
    # transformers 5 writes neither; vLLM creates e_score_correction_bias only for noaux_tc (DeepSeek's own files
    # have both). Extra config attributes are saved with the model, and kept by every checkpoint of it.
    model.config.topk_method, model.config.scoring_func = "noaux_tc", "sigmoid"
    return model


@dataclass(frozen=True)
class Recipe:
    """How one embedded base model is made: its corpus generator and the defaults of its command line."""

    corpus: Callable[[int, int], list[str]]  # (num_docs, seed) -> documents, each ending in EOS
    out: str
    num_docs: int
    vocab_size: int
    tokenizer_docs: int = 2000  # the first N documents train the tokenizer
    meta: dict = field(default_factory=dict)  # written into purerl_base.json
    sources: tuple[str, ...] = ()  # modules besides the corpus's own and this one whose code shapes the model
    architecture: Callable[[int, int], Any] = qwen3_moe  # (vocab_size, eos_id) -> a fresh model to pretrain

    def fingerprint(self) -> str:
        """sha256 of the code that makes this model: a changed recipe means a stale model."""
        digest = hashlib.sha256()
        modules = {self.corpus.__module__, self.architecture.__module__, __name__, "rl.data.prompts", *self.sources}
        for name in sorted(modules):
            digest.update(Path(importlib.import_module(name).__file__).read_bytes())
        return digest.hexdigest()

    def is_built(self, out: Path) -> bool:
        """`out` holds a model made by this recipe as it is now."""
        try:
            return json.loads((out / "purerl_base.json").read_text()).get("recipe_sha") == self.fingerprint()
        except (OSError, ValueError):
            return False


def build(recipe: Recipe, out: Path, *, num_docs: int | None = None, batch_size: int = 64, lr: float = 3e-3,
          vocab_size: int | None = None, seed: int = 0) -> None:
    """Pretrain and save the recipe's model (num_docs and vocab_size default to the recipe's)."""
    num_docs, vocab_size = num_docs or recipe.num_docs, vocab_size or recipe.vocab_size
    torch.manual_seed(seed)
    docs = recipe.corpus(num_docs, seed)
    tokenizer = train_tokenizer(docs[: recipe.tokenizer_docs], vocab_size)
    model = recipe.architecture(len(tokenizer), tokenizer.eos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"base-model: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, {num_docs} docs", flush=True)
    pretrain(model, tokenizer, docs, batch_size=batch_size, lr=lr, seed=seed)
    save(model, tokenizer, out, {"num_docs": num_docs, "seed": seed, **recipe.meta, "recipe_sha": recipe.fingerprint()})


def main(recipe: Recipe, description: str) -> None:
    """The command line of a base-model module: builds `--out` unless it exists (or --rebuild)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=Path(recipe.out))
    p.add_argument("--num-docs", type=int, default=recipe.num_docs)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab-size", type=int, default=recipe.vocab_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="replace an existing model (make does this when the recipe changes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.out / "config.json").exists() and not args.rebuild:
        print(f"base-model: {args.out} exists, nothing to do")
        return
    build(recipe, args.out, num_docs=args.num_docs, batch_size=args.batch_size, lr=args.lr,
          vocab_size=args.vocab_size, seed=args.seed)
