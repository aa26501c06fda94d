"""What every embedded base model is built with: a byte-level BPE tokenizer, a short next-token pretraining on
a generated corpus, and an atomic save. Deterministic for a fixed seed."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

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
