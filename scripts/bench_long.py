"""make bench-long: one trainer update on one long answer, purerl chunked / purerl materialized / TRL, and one
end-to-end step through real engines with forced 8,192-token answers (docs/benchmarks.md, "Long answers").

    make bench-long                                   # = .venv/bin/python scripts/bench_long.py
    make bench-long ARGS="--lengths 1024 4096 --no-e2e"

The model: a random-init 2-layer Qwen3-MoE (hidden 256, 8 experts, top-2) with Qwen2.5's 151,936-token vocabulary
and 40,960 positions, built once into models/bench-long-moe. Each cell runs in a process of its own, capped at
--memory-gib of address space, so that a side that runs out of memory reports it and the benchmark goes on: a warm-up
update on 256 tokens (Adam's state allocated), then the timed update of one answer of the cell's length after a
64-token prompt. Memory is the process's peak resident set during that update. Writes runs/bench/long.json and
runs/bench/long_memory.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "models/bench-long-moe"
LONG_TINY = "models/tiny-moe-long"  # the tiny policy with 16,384 positions, for the end-to-end step
PROMPT = 64
SIDES = ("purerl chunked", "purerl materialized", "trl")
OUT = Path("runs/bench")


def build_model(path: str = MODEL) -> None:
    """The benchmark policy (random weights, seed 0) with the embedded tokenizer's files beside it (TRL needs a
    tokenizer; the random token ids are never decoded)."""
    if (Path(path) / "config.json").is_file():
        return
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(vocab_size=151936, hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=8,
                         num_experts_per_tok=2, max_position_embeddings=40960, tie_word_embeddings=False)
    Qwen3MoeForCausalLM(cfg).save_pretrained(path)
    for f in Path("models/tiny-moe-base").glob("tokenizer*"):
        shutil.copy(f, path)


def one_answer(length: int, seed: int = 0):
    """Token ids (1, PROMPT + length) of one random answer after a random prompt, and its response mask."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 151936, (1, PROMPT + length), generator=g)
    mask = torch.zeros(1, PROMPT + length - 1, dtype=torch.bool)
    mask[:, PROMPT - 1 :] = True
    return ids, mask


def purerl_cell(length: int, chunk: int) -> dict:
    """One `Trainer.update` (GRPO, ppo_clip, no KL) on one answer; its time and peak RSS."""
    import torch

    from rl.batch.types import TrainBatch
    from rl.config import load_config
    from rl.trainer.memory import GIB, rss_bytes
    from rl.trainer.rank import Trainer

    cfg = load_config("configs/tiny.yaml", [f"model.path={MODEL}", f"trainer.logprob_chunk_tokens={chunk}",
                                            "algo.kl_coef=0", "trainer.threads=2", "rollout.max_new_tokens=40960"])
    trainer = Trainer(cfg, MODEL, MODEL)

    def batch(n: int) -> TrainBatch:
        ids, mask = one_answer(n)
        old = torch.where(mask, -11.9, 0.0)  # about the random policy's own logprobs: ratios near 1
        return TrainBatch(ids, torch.ones_like(ids), mask, old, torch.ones(1), mask.sum(1), sampler_logps=old)

    trainer.update(batch(256))
    before = rss_bytes()
    t = time.perf_counter()
    m = trainer.update(batch(length)).metrics
    return footprint(time.perf_counter() - t, m["trainer/peak_memory_gib"], before / GIB, m["loss/policy"])


def footprint(seconds: float, peak_gib: float, before_gib: float, loss: float) -> dict:
    """A cell's figures: the process's peak RSS during the update, its RSS before (weights, optimizer state, runtime)
    and the update's own memory, the difference."""
    return {"seconds": seconds, "peak_gib": peak_gib, "before_gib": before_gib, "update_gib": peak_gib - before_gib,
            "loss": loss}


def trl_cell(length: int) -> dict:
    """TRL's GRPOTrainer (its fused chunked LM head) on the same answer: `compute_loss`, backward, clip, AdamW step."""
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rl.trainer.memory import GIB, PeakMemory, rss_bytes

    torch.set_num_threads(2)
    args = GRPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-long-"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=length, beta=0.0, loss_type="grpo", use_cpu=True, bf16=False,
                      report_to=[], save_strategy="no", learning_rate=5e-5, max_grad_norm=1.0)
    trainer = GRPOTrainer(model=MODEL, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_list([{"prompt": "1+1"}] * 2),
                          processing_class=AutoTokenizer.from_pretrained(MODEL))
    trainer.current_gradient_accumulation_steps = 1
    model, optimizer = trainer.model, trainer.create_optimizer()
    model.train()

    def update(n: int) -> float:
        ids, _ = one_answer(n)
        inputs = {"prompt_ids": ids[:, :PROMPT], "prompt_mask": torch.ones(1, PROMPT, dtype=torch.long),
                  "completion_ids": ids[:, PROMPT:], "completion_mask": torch.ones(1, n, dtype=torch.long),
                  "advantages": torch.ones(1), "num_items_in_batch": torch.tensor(float(n))}
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    update(256)
    memory = PeakMemory(torch.device("cpu"))
    before = rss_bytes()
    t = time.perf_counter()
    with memory:
        loss = update(length)
    return footprint(time.perf_counter() - t, memory.take_peak_gib(), before / GIB, loss)


def run_cell(side: str, length: int, chunk: int, memory_gib: float) -> dict:
    """One cell in a process of its own (TRL's in .venv-bench), its address space capped: an allocation past the
    cap fails there, and the cell reports it instead of the machine swapping or the benchmark dying."""
    python = ".venv-bench/bin/python" if side == "trl" else sys.executable
    cmd = [python, __file__, "--cell", side, "--length", str(length), "--chunk", str(chunk)]
    limit = int(memory_gib * (1 << 30))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"})
    for line in proc.stdout.splitlines():
        if line.startswith("CELL_JSON "):
            return json.loads(line.removeprefix("CELL_JSON "))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}


def cell_main(side: str, length: int, chunk: int) -> None:
    try:
        out = trl_cell(length) if side == "trl" else purerl_cell(length, chunk if side == "purerl chunked" else 0)
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
            raise
        out = {"error": "out of memory", "detail": f"{type(e).__name__}: {str(e)[:200]}"}
    print("CELL_JSON " + json.dumps(out), flush=True)


def memory_slope(cells: dict, side: str) -> float | None:
    """KiB of peak memory per added token between the shortest and the longest length the side fits."""
    fit = sorted((int(n), c["update_gib"]) for n, c in cells[side].items() if "update_gib" in c)
    if len(fit) < 2:
        return None
    (n0, m0), (n1, m1) = fit[0], fit[-1]
    return (m1 - m0) * (1 << 20) / (n1 - n0)


def long_tiny_model() -> str:
    """models/tiny-moe-base with 16,384 positions (its rotary positions need no weights): the policy of the
    end-to-end step, whose parity compares the trainer and the engines on the same weights."""
    if not (Path(LONG_TINY) / "config.json").is_file():
        shutil.copytree("models/tiny-moe-base", LONG_TINY, dirs_exist_ok=True)
        config = json.loads((Path(LONG_TINY) / "config.json").read_text())
        config["max_position_embeddings"] = 16384
        (Path(LONG_TINY) / "config.json").write_text(json.dumps(config, indent=2))
    return LONG_TINY


def end_to_end(length: int) -> dict:
    """One real step (Ray, a vLLM engine, rewards, the update, the sync) with every answer forced to `length`
    tokens, then the run's closing parity check; its time split and both parity figures."""
    run_dir = OUT / "long-e2e"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [f"model.path={long_tiny_model()}", f"rollout.max_new_tokens={length}", f"rollout.min_new_tokens={length}",
            "trainer.steps=1", "trainer.prompts_per_step=1", "rollout.n=2", "rollout.kv_cache_gib=4",
            "run.eval_before=false", "run.eval_after=false", "run.save_checkpoint=false", "log.plot=false",
            "log.tensorboard=false", "eval.sets={}", f"run.dir={run_dir}", "trainer.max_tokens_per_micro_batch=16384"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *args], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    m = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    keys = ["time/generate", "time/reward", "time/train", "time/sync", "response/len_mean", "rollout/tokens_per_s",
            "rollout/logprob_abs_diff_max", "trainer/micro_batches", "trainer/peak_memory_gib"]
    return {"length": length, "wall_s": time.perf_counter() - t, **{k: m[k] for k in keys},
            "sync_max_abs_logprob_diff": summary["sync_max_abs_logprob_diff"]}


def plot(cells: dict, lengths: list[int], path: Path, cpu: str) -> None:
    """Each side's update memory against length; a cell that ran out of memory is an x at the top, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    fitted = [c["update_gib"] for side in SIDES for c in cells[side].values() if "update_gib" in c]
    top = max(fitted, default=1.0) * 1.2
    for side, style in zip(SIDES, ["o-", "s--", "^-."]):
        got = {n: cells[side].get(str(n), {}) for n in lengths}
        pts = [(n, c["update_gib"]) for n, c in got.items() if "update_gib" in c]
        color = ax.plot(*zip(*pts), style, label=side)[0].get_color() if pts else "k"
        for n, c in got.items():
            if "error" in c:
                ax.plot([n], [top * 0.95], "x", color=color, markersize=9)
                ax.annotate("out of memory" if "memory" in c["error"] else "failed", (n, top * 0.95),
                            textcoords="offset points", xytext=(0, -14), ha="center", fontsize=7, color=color)
    ax.set_ylim(0, top)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [f"{n // 1024}k" for n in lengths])
    ax.set_xlabel("response tokens (one answer)")
    ax.set_ylabel("memory of one update (GiB: peak RSS - RSS before)")
    ax.set_title(f"One trainer update, 2-layer MoE, 151,936-token vocabulary\n{cpu}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(label: str, cell: dict) -> dict:
    shown = cell.get("error") or (f"{cell['seconds']:7.1f} s  update {cell['update_gib']:5.2f} GiB  "
                                  f"(process peak {cell['peak_gib']:5.2f})")
    print(f"{label} {shown}", flush=True)
    return cell


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with its family/model and the vector extensions that matter here."""
    info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    simd = [name for f, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"))
            if f in flags]
    vector = ", ".join(simd) if simd else ("AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    return (f"{info.get('model name', platform.processor())} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, {vector}), {os.cpu_count()} cores")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--chunk", type=int, default=0, help="trainer.logprob_chunk_tokens (0: the config's default)")
    p.add_argument("--memory-gib", type=float, default=22.0, help="each cell's address-space cap")
    p.add_argument("--sweep-chunks", type=int, nargs="*", default=[128, 256, 512, 1024, 2048])
    p.add_argument("--sweep-length", type=int, default=4096)
    p.add_argument("--e2e-length", type=int, default=8192)
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from runs/bench/long.json")
    p.add_argument("--cell", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cell:
        return cell_main(args.cell, args.length, args.chunk)
    from rl.config import TrainerConfig

    if args.plot_only:
        saved = json.loads((OUT / "long.json").read_text())
        return plot(saved["cells"], sorted(int(n) for n in saved["cells"][SIDES[0]]), OUT / "long_memory.png",
                    saved["cpu"])
    chunk = args.chunk or TrainerConfig().logprob_chunk_tokens
    build_model()
    OUT.mkdir(parents=True, exist_ok=True)
    cpu = cpu_name()
    print(f"{cpu}; model {MODEL}; chunk {chunk} tokens; each cell capped at {args.memory_gib:g} GiB", flush=True)
    cells = {side: {} for side in SIDES}
    for n in args.lengths:
        for side in args.sides:
            cells[side][str(n)] = report(f"{n:>6} tokens  {side:<20}", run_cell(side, n, chunk, args.memory_gib))
    sweep = {str(c): report(f"chunk {c:>5} at {args.sweep_length} tokens", run_cell(SIDES[0], args.sweep_length, c,
                                                                                   args.memory_gib))
             for c in args.sweep_chunks}
    result = {"cpu": cpu, "date": time.strftime("%Y-%m-%d"), "model": MODEL, "chunk_tokens": chunk, "cells": cells,
              "kib_per_token": {s: memory_slope(cells, s) for s in args.sides}, "chunk_sweep": sweep}
    both = [n for n in map(str, args.lengths) if "seconds" in cells[SIDES[0]].get(n, {})
            and "seconds" in cells[SIDES[1]].get(n, {})]
    result["time_ratio_chunked_over_materialized"] = {n: cells[SIDES[0]][n]["seconds"] / cells[SIDES[1]][n]["seconds"]
                                                      for n in both}
    print("KiB per token: " + ", ".join(f"{s} {v:.1f}" for s, v in result["kib_per_token"].items() if v is not None))
    if not args.no_e2e:
        result["end_to_end"] = end_to_end(args.e2e_length)
        print("end to end: " + json.dumps(result["end_to_end"]), flush=True)
    (OUT / "long.json").write_text(json.dumps(result, indent=2))
    plot(cells, args.lengths, OUT / "long_memory.png", cpu)
    print(f"wrote {OUT / 'long.json'} and {OUT / 'long_memory.png'}")


if __name__ == "__main__":
    main()
