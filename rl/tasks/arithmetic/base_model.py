"""Builds the embedded base policy: a byte-level BPE tokenizer and a tiny Qwen3-MoE, pretrained briefly.

The corpus gives the model a weak prior: under the R1-Zero template it sometimes reasons digit by digit
(and is then usually right) and more often guesses a nearby number (usually wrong). RL has to discover
that reasoning pays. `python -m rl.tasks.arithmetic.base_model --out models/tiny-moe-base` (deterministic,
~minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from rl.data.prompts import apply_template
from rl.tasks.arithmetic.task import question as make_question
from rl.tasks.arithmetic.task import splits
from rl.tasks.pretrain import EOS, pretrain, save, train_tokenizer

CAREFUL_SHARE = 0.3  # share of corpus documents that reason step by step
GUESS_RIGHT = 0.1  # how often a quick guess in the corpus is the right answer


def careful_trace(a: int, b: int) -> str:
    """Column addition in three steps, e.g. 47+85: '7+5=12 , 40+80=120 , 120+12=132'."""
    units, tens = a % 10 + b % 10, (a // 10 + b // 10) * 10
    return f"{a % 10}+{b % 10}={units} , {a // 10 * 10}+{b // 10 * 10}={tens} , {tens}+{units}={a + b}"


def completion(a: int, b: int, rng: random.Random) -> str:
    """One corpus completion after the template's '<think>'."""
    if rng.random() < CAREFUL_SHARE:
        return f" {careful_trace(a, b)} </think> <answer> {a + b} </answer>"
    guess = a + b
    if rng.random() >= GUESS_RIGHT:
        guess = max(0, a + b + rng.choice([-1, 1]) * rng.randint(1, 12))
    return f" a quick guess </think> <answer> {guess} </answer>"


def corpus(num_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    train, _ = splits()
    docs = []
    for _ in range(num_docs):
        a, b = rng.choice(train)
        docs.append(apply_template(make_question(a, b), "r1_zero") + completion(a, b, rng) + EOS)
    return docs


def model_config(vocab_size: int, eos_id: int):
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
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
    )


def build(out: Path, *, num_docs: int, batch_size: int, lr: float, vocab_size: int, seed: int) -> None:
    from transformers import Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    docs = corpus(num_docs, seed)
    tokenizer = train_tokenizer(docs[:2000], vocab_size)
    model = Qwen3MoeForCausalLM(model_config(len(tokenizer), tokenizer.eos_token_id))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"base-model: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, {num_docs} docs", flush=True)
    pretrain(model, tokenizer, docs, batch_size=batch_size, lr=lr, seed=seed)
    save(model, tokenizer, out, {"num_docs": num_docs, "seed": seed, "careful_share": CAREFUL_SHARE})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("models/tiny-moe-base"))
    p.add_argument("--num-docs", type=int, default=48000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="replace an existing model (make does this when the recipe changes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.out / "config.json").exists() and not args.rebuild:
        print(f"base-model: {args.out} exists, nothing to do")
        return
    build(args.out, num_docs=args.num_docs, batch_size=args.batch_size, lr=args.lr, vocab_size=args.vocab_size, seed=args.seed)


if __name__ == "__main__":
    main()
