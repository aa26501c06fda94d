"""`make precision`: the learning table in bf16 (#29). Five variants, same seed and steps, on two models:

    fp32          the reference
    bf16          trainer.mixed_precision=bf16 (bf16 autocast over fp32 masters, engines in bf16), no correction
    bf16+tis      + truncated importance sampling (algo.old_logprobs=trainer, algo.tis_cap)
    bf16+replay   + rollout routing replay (moe.routing_replay=vllm)
    bf16+both     + both (the trainer's old forward takes the engine's experts; TIS corrects what is left)

on configs/tiny.yaml (the tiny Qwen3-MoE) and configs/tiny-dsv3.yaml (the tiny DeepSeek-V3), and the extremes
(fp32 and bf16) again with a second seed. Each is a real `python -m rl.train` run into runs/precision/<name>; a run
that finished (its summary.json) is read, not run again. Writes runs/precision/precision.json, prints the markdown
table of docs/objectives.md, and draws precision.png (training accuracy and mismatch against the step), copied
to docs/img/precision.png.

    make precision                                   # everything (about 2 hours on 2 cores)
    make precision ARGS="--models tiny --seeds 0"    # one model, one seed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

BF16 = ["trainer.mixed_precision=bf16"]
TIS = ["algo.old_logprobs=trainer", "algo.tis_cap=2.0"]
REPLAY = ["moe.routing_replay=vllm"]
VARIANTS = {"fp32": ["trainer.mixed_precision=off"], "bf16": BF16, "bf16+tis": BF16 + TIS,
            "bf16+replay": BF16 + REPLAY, "bf16+both": BF16 + REPLAY + TIS}
MODELS = {"tiny": "configs/tiny.yaml", "dsv3": "configs/tiny-dsv3.yaml"}
EXTREMES = ("fp32", "bf16")  # the variants run again with each extra seed
SPIKE = 3.0  # a grad-norm spike: a step whose norm is over SPIKE x the run's median


def seeded(seed: int) -> list[str]:
    return [f"data.seed={seed}", f"rollout.seed={seed}", f"trainer.seed={seed}"]


def run(model: str, variant: str, seed: int, steps: int, out: Path) -> Path:
    """The run's folder, trained unless a finished one is there."""
    run_dir = out / f"{model}-{variant}-s{seed}"
    if (run_dir / "summary.json").exists():
        print(f"precision: {run_dir.name} done before, read", flush=True)
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "rl.train", "--config", MODELS[model], f"run.dir={run_dir}", f"trainer.steps={steps}",
           "run.save_checkpoint=false", *seeded(seed), *VARIANTS[variant]]
    print(f"precision: {run_dir.name}: {' '.join(cmd[3:])}", flush=True)
    t = time.perf_counter()
    with open(out / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"precision: {run_dir.name} failed (exit {proc.returncode}); see {out / run_dir.name}.log")
    print(f"precision: {run_dir.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return run_dir


def row(run_dir: Path) -> dict:
    """One line of the table from a finished run's summary and metrics."""
    summary = json.loads((run_dir / "summary.json").read_text())
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logged if "grad_norm" in m]  # step 0 is the evaluation before training
    norms = [m["grad_norm"] for m in steps]
    median = statistics.median(norms)
    agree = [m["moe/routing_agreement"] for m in steps if "moe/routing_agreement" in m]
    return {"before": summary["base_accuracy"], "after": summary["final_accuracy"],
            "mismatch_mean": statistics.mean(m["rollout/logprob_abs_diff_mean"] for m in steps),
            "mismatch_max": max(m["rollout/logprob_abs_diff_max"] for m in steps),
            "routing_agreement": statistics.mean(agree) if agree else None,
            "routing_agreement_min": min(agree) if agree else None,
            "grad_norm_median": median, "grad_norm_max": max(norms),
            "spikes": sum(n > SPIKE * median for n in norms), "wall_s": summary["wall_seconds"],
            "curve": {"step": [m["step"] for m in steps], "accuracy": [m["reward/accuracy"] for m in steps],
                      "mismatch": [m["rollout/logprob_abs_diff_mean"] for m in steps]}}


def table(rows: dict[str, dict]) -> str:
    lines = ["| model | variant | seed | held-out before | after | mismatch mean | mismatch max | routing agreement "
             "(mean / min) | grad-norm spikes (max / median) | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        model, rest = name.split("-", 1)
        variant, seed = rest.rsplit("-s", 1)
        agree = "-" if r["routing_agreement"] is None else f"{r['routing_agreement']:.4f} / {r['routing_agreement_min']:.4f}"
        lines.append(f"| {model} | {variant} | {seed} | {r['before']:.3f} | {r['after']:.3f} | {r['mismatch_mean']:.2e} "
                     f"| {r['mismatch_max']:.2f} | {agree} | {r['spikes']} ({r['grad_norm_max']:.2f} / "
                     f"{r['grad_norm_median']:.2f}) | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def plot(rows: dict[str, dict], models: list[str], out: Path) -> None:
    """Per model: training accuracy (5-step mean) and the mean mismatch against the step, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, variant in enumerate(VARIANTS):
            for name, r in rows.items():
                if not name.startswith(f"{model}-{variant}-s"):
                    continue
                seed = int(name.rsplit("-s", 1)[1])
                c, style = r["curve"], dict(color=f"C{j}", linestyle="-" if seed == 0 else ":",
                                             label=variant + ("" if seed == 0 else f" (seed {seed})"))
                acc = [statistics.mean(c["accuracy"][max(0, k - 4): k + 1]) for k in range(len(c["accuracy"]))]
                axes[i][0].plot(c["step"], acc, **style)
                axes[i][1].plot(c["step"], c["mismatch"], **style)
        axes[i][0].set(title=f"{model}: training accuracy (5-step mean)", xlabel="step", ylabel="accuracy")
        axes[i][1].set(title=f"{model}: mean |logprob engine - trainer|", xlabel="step", yscale="log")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="the first: every variant; the rest: fp32, bf16")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "precision")
    p.add_argument("--docs-img", default="docs/img/precision.png", help="where the PNG is copied; '' for nowhere")
    args = p.parse_args()
    os.chdir(ROOT)
    from bench_long import cpu_name

    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for model in args.models:
        subprocess.run([sys.executable, "-m", "rl.tasks.build", "--config", MODELS[model]], cwd=ROOT, check=True)
        for k, seed in enumerate(args.seeds):
            for variant in args.variants:
                if k == 0 or variant in EXTREMES:
                    run_dir = run(model, variant, seed, args.steps, args.out)
                    rows[run_dir.name] = row(run_dir)
                    (args.out / "precision.json").write_text(json.dumps({"cpu": cpu_name(), "steps": args.steps,
                                                                         "rows": rows}, indent=1) + "\n")
    png = args.out / "precision.png"
    plot(rows, args.models, png)
    if args.docs_img:
        shutil.copyfile(png, ROOT / args.docs_img)
    print(f"CPU: {cpu_name()}; {args.steps} steps per run")
    print(table(rows))
    print(f"wrote {args.out / 'precision.json'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
