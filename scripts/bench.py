"""`make bench`: purerl against TRL's GRPOTrainer on identical work, in one run, plus the step's time explained.

Same tiny MoE, prompts per step, group size, max new tokens, batch, micro-batch (whole batch), steps, fp32,
verifiers and reward weights. The first step of each side is warm-up and is left out of the means.
Writes runs/bench/bench.json and prints a table; the last line sums up the speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_peak_flops(dtype=torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-N matmul throughput on this process's threads, the better of torch.mm and F.linear (nn.Linear's
    path, which the models run; in bf16 on the Zen 3 box, which has no bf16 instructions, ~18x faster than
    torch.mm's fallback): the denominator of MFU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for op in (torch.mm, torch.nn.functional.linear):
        op(a, b)
        best = min(best, *(_timed(lambda op=op: op(a, b)) for _ in range(repeats)))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def active_matmul_params(model) -> int:
    """Parameters a token multiplies through: everything but the input embedding, experts scaled by top-k / E."""
    cfg = model.config
    share = cfg.num_experts_per_tok / cfg.num_experts
    total = 0
    for name, p in model.named_parameters():
        if "embed_tokens" in name or p.dim() < 2:
            continue
        total += p.numel() * share if ".experts." in name else p.numel()
    return int(total)


def purerl_config(args, run_dir: Path, extra: tuple[str, ...] = ()):
    """purerl's config for the work `args` describe (the same work run_trl gives TRL), run into `run_dir`."""
    from rl.config import load_config

    return load_config(args.config, [
        f"model.path={args.model}", f"trainer.prompts_per_step={args.prompts}", f"rollout.n={args.n}",
        f"rollout.max_new_tokens={args.max_new_tokens}", f"rollout.min_new_tokens={args.min_new_tokens}",
        f"trainer.micro_batch_size={args.micro_batch or args.prompts * args.n}", f"trainer.steps={args.steps}",
        f"trainer.lr={args.lr}", f"algo.kl_coef={args.beta}", "run.eval_before=false", "run.eval_after=false",
        "run.save_checkpoint=false", f"run.dir={run_dir}",
    ] + args.set + list(extra))


def run_purerl(cfg) -> list[dict]:
    """Trains with `cfg`; its per-step metrics."""
    from rl.train import train

    train(cfg)
    return [json.loads(x) for x in (Path(cfg.run.dir) / "metrics.jsonl").read_text().splitlines()]


def train_dtype(cfg) -> torch.dtype:
    """The dtype the trainer's matmuls run in: bf16 under mixed precision, else the weights' own."""
    from rl.trainer.device import compute_dtype, trainer_device

    return compute_dtype(cfg, trainer_device(cfg)) or getattr(torch, cfg.model.dtype)


def standalone_vllm_tokens_per_s(cfg, batches: list[list[int]]) -> tuple[float, int]:
    """vLLM alone, in this process, on the loop's own prompt batches (`data/indices` of its timed steps, one
    generate call each, after a warm-up call) with the loop's sampling: total tokens over total seconds, as the
    loop's rate is counted. Completion lengths set how many decode passes a batch takes, so only the same
    prompts make the two rates comparable. Returns (tokens/s, tokens generated)."""
    from transformers import AutoTokenizer

    from rl.collect.generate import sampling
    from rl.data import apply_template, load_prompts
    from rollout.engine import create_engine, generate_groups, sampling_params
    from rollout.types import EngineSpec

    r = cfg.rollout
    tok = AutoTokenizer.from_pretrained(cfg.model.path)
    rows = {x.index: x for x in load_prompts(cfg.data.train)}
    ids = [[tok(apply_template(rows[i].question, cfg.data.template))["input_ids"] for i in batch] for batch in batches]
    omp = os.environ.get("OMP_NUM_THREADS")
    llm = create_engine(EngineSpec(cfg.model.path, dtype=cfg.model.dtype, seed=r.seed, enforce_eager=r.enforce_eager,
                                   kv_cache_gib=r.kv_cache_gib, gpu_memory_utilization=r.gpu_memory_utilization,
                                   max_model_len=max(len(x) for b in ids for x in b) + r.max_new_tokens,
                                   threads=r.engine_threads))
    if omp is None:  # the engine read it; TRL's subprocess must not inherit it
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp
    params = sampling_params(sampling(r, r.n))
    generate_groups(llm, ids[0], list(range(len(ids[0]))), params)  # warm-up
    tokens, seconds = 0, 0.0
    for batch in ids:
        t = time.perf_counter()
        groups = generate_groups(llm, batch, list(range(len(batch))), params)
        seconds += time.perf_counter() - t
        tokens += sum(len(c.token_ids) for g in groups for c in g.completions)
    del llm
    return tokens / seconds, tokens


def run_trl(args, mode: str) -> dict:
    cmd = [str(ROOT / args.bench_venv / "bin" / "python"), str(ROOT / "scripts" / "bench_trl.py"),
           "--model", args.model, "--train", args.train, "--prompts", str(args.prompts), "--n", str(args.n),
           "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps), "--lr", str(args.lr),
           "--beta", str(args.beta), "--mode", mode, "--min-new-tokens", str(args.min_new_tokens),
           "--micro-batch", str(args.micro_batch)] + (["--bf16"] if getattr(args, "bf16", False) else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.trl_timeout_s)
    except subprocess.TimeoutExpired:  # a mode that runs past the limit is reported like one that fails
        return {"mode": mode, "error": f"timed out after {args.trl_timeout_s} s (--trl-timeout-s)"}
    found = re.findall(r"^BENCH_JSON (.*)$", proc.stdout, flags=re.M)
    if not found:
        return {"mode": mode, "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    return json.loads(found[-1])


def step_split(metrics: list[dict]) -> dict[str, float]:
    """Mean seconds per step of each stage; `other` is the step's wall time not covered by a stage."""
    def avg(key):
        return mean(m.get(key, 0.0) for m in metrics)

    split = {"generate": avg("time/generate"), "reward": avg("time/reward"), "reference": avg("time/reference"),
             "optimizer": avg("time/optimizer"), "sync": avg("time/sync")}
    split["policy_fwd_bwd"] = avg("time/train") - split["reference"] - split["optimizer"]
    split["other"] = avg("time/wall") - sum(split.values())
    return split


def add_work_args(p: argparse.ArgumentParser) -> None:
    """The command-line options that describe one work point (shared with scripts/bench_sweep.py)."""
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--min-new-tokens", type=int, default=0, help="= --max-new-tokens: every answer that long")
    p.add_argument("--micro-batch", type=int, default=0, help="sequences per forward + backward; 0: the whole batch")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--set", nargs="*", default=[], help="extra purerl overrides, e.g. rollout.capture_routing=false")
    p.add_argument("--bench-venv", default=".venv-bench")
    p.add_argument("--trl-timeout-s", type=int, default=900)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")


def measure(args, run_dir: Path, trl_modes: tuple[str, ...]) -> dict:
    """One work point, in this order: the matmul peak of the trainer's dtype, purerl's loop, vLLM alone on the
    loop's own prompt batches, then TRL in each mode. Returns the comparison's numbers."""
    cfg = purerl_config(args, run_dir)
    dtype = train_dtype(cfg)
    peak = matmul_peak_flops(dtype)
    timed = run_purerl(cfg)[1:]  # step 1 is warm-up
    standalone, standalone_tokens = standalone_vllm_tokens_per_s(cfg, [m["data/indices"] for m in timed])
    trl = {mode: run_trl(args, mode) for mode in trl_modes}

    from transformers import AutoModelForCausalLM

    active = active_matmul_params(AutoModelForCausalLM.from_pretrained(cfg.model.path))
    split = step_split(timed)
    purerl_step = mean(m["time/wall"] for m in timed)
    rollout_tps = sum(m["rollout/tokens"] for m in timed) / sum(m["time/generate"] for m in timed)
    train_flops = mean(6 * active * m["train/tokens"] for m in timed)  # forward 2N + backward 4N per token
    policy_s = split["policy_fwd_bwd"] + split["optimizer"]
    ok = {k: v for k, v in trl.items() if "step_s" in v}
    trl_steps = {k: mean(v["step_s"][1:]) for k, v in ok.items()}
    best_mode = min(trl_steps, key=trl_steps.get) if trl_steps else None
    return {
        "purerl_step_s": purerl_step,
        "trl_step_s": trl_steps.get(best_mode),
        "trl_mode": best_mode,
        "trl_step_s_by_mode": trl_steps,
        "trl_step_split_s": trl_split(ok[best_mode]) if best_mode else None,
        "trl_errors": {k: v["error"] for k, v in trl.items() if "error" in v},
        "speedup_vs_trl": trl_steps[best_mode] / purerl_step if best_mode else None,
        # TRL's own mean answer length (its logs), against purerl's rollout_tokens: the same work on both sides
        "trl_mean_completion_tokens": mean(ok[best_mode]["completion_tokens"] or [0]) if best_mode else None,
        "rollout_tokens_per_s": rollout_tps,
        "vllm_standalone_tokens_per_s": standalone,
        "rollout_tokens": sum(m["rollout/tokens"] for m in timed),  # what the two rates were counted over
        "vllm_standalone_tokens": standalone_tokens,
        "rollout_efficiency": rollout_tps / standalone,
        "sync_share": split["sync"] / purerl_step,
        "reward_share": split["reward"] / purerl_step,
        "train_mfu": train_flops / policy_s / peak,
        "matmul_peak_gflops": peak / 1e9,
        "matmul_peak_dtype": str(dtype).removeprefix("torch."),
        "active_matmul_params": active,
        "train_tokens_per_step": mean(m["train/tokens"] for m in timed),
        "timed_steps": len(timed),
        "step_split_s": split,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    add_work_args(p)
    args = p.parse_args()
    os.chdir(ROOT)
    from rl.config import load_config

    base = load_config(args.config)
    args.model, args.train = base.model.path, base.data.train
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / f"purerl-{time.strftime('%Y%m%d-%H%M%S')}"

    point = measure(args, run_dir, ("transformers", "vllm"))
    # Async overlaps the engine with the trainer, so the engine keeps to its own Ray CPU (engine_threads 0): two
    # threads each on two cores would spin against each other.
    async_cfg = purerl_config(args, run_dir.with_name(run_dir.name + "-async"),
                              ("rollout.async=true", "rollout.engine_threads=0"))
    async_step = mean(m["time/wall"] for m in run_purerl(async_cfg)[1:])
    result = {
        "machine": f"{os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "purerl_overrides": args.set,
        "work": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
                 "min_new_tokens": args.min_new_tokens, "steps": args.steps, "timed_steps": point["timed_steps"],
                 "dtype": point["matmul_peak_dtype"], "beta": args.beta,
                 "micro_batch": args.micro_batch or args.prompts * args.n},
        **point,
        "async_step_s": async_step,
        "async_speedup_vs_sync": point["purerl_step_s"] / async_step,
    }
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def trl_split(run: dict) -> dict[str, float] | None:
    """TRL's mean step split over the timed steps: generation, the rest of its rollout stage (rewards, advantages,
    old and reference logprobs), and training (forward, backward, optimizer)."""
    if len(run.get("generate_s", [])) != len(run["step_s"]) or len(run.get("prepare_s", [])) != len(run["step_s"]):
        return None  # one call each per step is what the split assumes
    gen, prep, step = (mean(run[k][1:]) for k in ("generate_s", "prepare_s", "step_s"))
    return {"generate": gen, "score_and_logprobs": prep - gen, "train": step - prep}


def print_table(r: dict) -> None:
    rows = [("purerl step (s)", f"{r['purerl_step_s']:.3f}")]
    for mode, s in r["trl_step_s_by_mode"].items():
        rows.append((f"TRL GRPOTrainer step, {mode} generation (s)", f"{s:.3f}"))
    for mode, err in r["trl_errors"].items():
        rows.append((f"TRL GRPOTrainer, {mode} generation", "failed: " + err.splitlines()[0][:90]))
    rows += [
        ("rollout tokens/s in the loop", f"{r['rollout_tokens_per_s']:.0f}"),
        ("vLLM standalone tokens/s", f"{r['vllm_standalone_tokens_per_s']:.0f}"),
        ("tokens generated: loop / standalone", f"{r['rollout_tokens']} / {r['vllm_standalone_tokens']}"),
        ("rollout_efficiency", f"{r['rollout_efficiency']:.2f}"),
        ("sync_share", f"{r['sync_share']:.3f}"),
        ("reward_share", f"{r['reward_share']:.3f}"),
        (f"train_mfu ({r['matmul_peak_dtype']} matmul peak {r['matmul_peak_gflops']:.0f} GFLOP/s)", f"{r['train_mfu']:.3f}"),
    ]
    rows += [(f"  step split: {k}", f"{v:.3f} s ({v / r['purerl_step_s']:.0%})") for k, v in r["step_split_s"].items()]
    for k, v in (r["trl_step_split_s"] or {}).items():
        rows.append((f"  TRL ({r['trl_mode']}) step split: {k}", f"{v:.3f} s ({v / r['trl_step_s']:.0%})"))
    rows += [("purerl step, rollout.async=true (s)", f"{r['async_step_s']:.3f}"),
             ("async_speedup_vs_sync", f"{r['async_speedup_vs_sync']:.2f}")]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    if r["speedup_vs_trl"]:
        print(f"purerl is {r['speedup_vs_trl']:.2f}x faster per step than TRL's fastest mode ({r['trl_mode']}) on identical work")
    else:
        print("no TRL mode ran; see trl_errors in bench.json")


if __name__ == "__main__":
    main()
