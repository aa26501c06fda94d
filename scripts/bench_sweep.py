"""`make bench-sweep`: purerl against TRL's GRPOTrainer over a grid of response length, model and group size.

Each cell is one `make bench` work point (scripts/bench.py's `measure`): purerl's loop, vLLM alone on the loop's
prompt batches, then TRL with transformers generation, on identical work. Every answer is exactly the cell's
length on both sides (vLLM `min_tokens`, transformers `min_new_tokens`), so both generate the same tokens.
Writes runs/bench/sweep.json ({"cells": [...]}, rewritten after every cell) and sweep_speedup.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, add_work_args, measure  # noqa: E402  (bench.py puts the repo root on sys.path too)

# Each model of the sweep: the tiny Qwen3-MoE's config with these values over it. Both hold 2048 positions so that
# vLLM serves 1024-token answers (the tiny model was trained on 512: past them it extrapolates its rotary
# positions, which transformers computes the same way whatever the limit, and speed does not depend on).
# `large`: 57 M parameters, 13 M active per token.
SHAPES = {
    "tiny": {"max_position_embeddings": 2048},
    "large": {"hidden_size": 512, "intermediate_size": 1024, "moe_intermediate_size": 256, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "num_experts": 16,
              "num_experts_per_tok": 2, "max_position_embeddings": 2048},
}


def bench_model(base: Path, shape: dict, out: Path) -> Path:
    """`base`'s architecture and tokenizer with `shape` over its config, saved at `out` once (again when the shape
    changes). `base`'s trained weights when only the position limit changes, else random ones: every answer has
    a fixed length, so speed does not depend on them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rl.tasks.pretrain import save

    trained = set(shape) <= {"max_position_embeddings"}
    recipe = {"bench_shape": shape, "base": str(base), "weights": "base" if trained else "random, seed 0"}
    try:
        if json.loads((out / "purerl_base.json").read_text()) == recipe:
            return out
    except (OSError, ValueError):
        pass
    config = AutoConfig.from_pretrained(base)
    for key, value in shape.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = (AutoModelForCausalLM.from_pretrained(base, config=config) if trained
             else AutoModelForCausalLM.from_config(config))
    print(f"bench-sweep: building {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params)", flush=True)
    save(model, AutoTokenizer.from_pretrained(base), out, recipe)
    return out


def run_cell(args, runs: Path, model: str, path: Path, length: int, group: int, precision: str = "fp32") -> dict:
    """One cell: `measure` on the cell's work in `precision` (fp32, or bf16: purerl's trainer.mixed_precision=bf16
    and TRL's bf16=True, both bf16 autocast over fp32 weights); the grid's coordinates first."""
    mode = "bf16" if precision == "bf16" else "off"
    work = argparse.Namespace(**{**vars(args), "model": str(path), "n": group, "max_new_tokens": length,
                                 "min_new_tokens": length, "micro_batch": min(args.micro_batch, args.prompts * group),
                                 "set": args.set + [f"trainer.mixed_precision={mode}"], "bf16": precision == "bf16"})
    run_dir = runs / f"{model}-T{length}-G{group}-{precision}"
    t, load = time.perf_counter(), os.getloadavg()[0]
    point = measure(work, run_dir, ("transformers",))
    # the load average around the cell: other work on the machine's cores slows every stage of it
    return {"model": model, "model_path": str(path), "precision": precision, "response_tokens": length, "group_size": group,
            "prompts": args.prompts, "steps": args.steps, "micro_batch": work.micro_batch, **point,
            "cell_wall_s": time.perf_counter() - t, "load_avg_1m": [load, os.getloadavg()[0]]}


def plot(cells: list[dict], out: Path) -> None:
    """Speedup over TRL against response length: one line per model and group size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    models = list(dict.fromkeys(c["model"] for c in cells))  # in the grid's order
    lines = list(dict.fromkeys((c["model"], c["group_size"], c.get("precision", "fp32")) for c in cells))
    for j, (model, group, precision) in enumerate(lines):
        pts = sorted((c["response_tokens"], c["speedup_vs_trl"]) for c in cells if c["speedup_vs_trl"]
                     and (c["model"], c["group_size"], c.get("precision", "fp32")) == (model, group, precision))
        if pts:
            ax.plot(*zip(*pts), marker="os^v"[j % 4], linestyle="--" if precision == "bf16" else "-",
                    color=f"C{models.index(model) * 2 + (precision == 'bf16')}", label=f"{model}, G={group}, {precision}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    lengths = sorted({c["response_tokens"] for c in cells})
    ax.set_xticks(lengths, [str(x) for x in lengths])
    ax.set_xlabel("response tokens (fixed on both sides)")
    ax.set_ylabel("speedup vs TRL GRPOTrainer (step time, same precision)")
    ax.set_title("purerl vs TRL (transformers generation)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def print_cells(cells: list[dict]) -> None:
    cols = [("model", "{}"), ("precision", "{}"), ("response_tokens", "{}"), ("group_size", "{}"), ("purerl_step_s", "{:.2f}"),
            ("trl_step_s", "{:.2f}"), ("speedup_vs_trl", "{:.2f}"), ("rollout_efficiency", "{:.2f}"),
            ("sync_share", "{:.3f}"), ("train_mfu", "{:.3f}"), ("matmul_peak_gflops", "{:.1f}"), ("cell_wall_s", "{:.0f}")]
    print("  ".join(k for k, _ in cols))
    for c in cells:
        print("  ".join("-" if c.get(k) is None else f.format(c[k]) for k, f in cols))
    for c in cells:  # bf16 against fp32, cell by cell, where the grid has both
        if c.get("precision") == "bf16":
            fp32 = [x for x in cells if x.get("precision") == "fp32" and
                    (x["model"], x["response_tokens"], x["group_size"]) == (c["model"], c["response_tokens"], c["group_size"])]
            if fp32:
                print(f"{c['model']}, {c['response_tokens']} tokens, G={c['group_size']}: purerl bf16 is "
                      f"{fp32[0]['purerl_step_s'] / c['purerl_step_s']:.2f}x purerl fp32 (step time); TRL bf16 is "
                      f"{(fp32[0]['trl_step_s'] or 0) / (c['trl_step_s'] or float('inf')):.2f}x TRL fp32")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    add_work_args(p)
    # Two steps a side (the first is warm-up) keep the default grid near 25 minutes on 2 cores, most of it in the
    # large model's 1024-token cells. 16 sequences per forward + backward on both sides: the large model's 32
    # answers of 1024 tokens in one would keep ~8 GB of activations.
    p.set_defaults(prompts=2, steps=2, micro_batch=16)
    p.add_argument("--lengths", type=ints, default=[64, 256, 1024], help="response tokens, e.g. 64,256,1024")
    p.add_argument("--groups", type=ints, default=[8, 16], help="group sizes, e.g. 8,16")
    p.add_argument("--models", default="tiny,large", help=f"a subset of {','.join(SHAPES)}")
    p.add_argument("--precisions", default="fp32", help="fp32, bf16 or both (fp32,bf16): each cell in each, side by side")
    p.add_argument("--docs-img", default="docs/img/sweep_speedup.png", help="where the PNG is copied; '' for nowhere")
    args = p.parse_args()
    os.chdir(ROOT)
    from bench_long import cpu_name

    from rl.config import load_config

    base = load_config(args.config)
    args.train = base.data.train
    args.set = ["rollout.kv_cache_gib=2"] + args.set  # 64 answers of 1024 tokens of the large model need ~1.1 GiB
    models = args.models.split(",")
    precisions = args.precisions.split(",")
    if unknown := set(precisions) - {"fp32", "bf16"}:
        p.error(f"--precisions: unknown {sorted(unknown)}; valid: fp32, bf16")
    if unknown := set(models) - set(SHAPES):
        p.error(f"--models: unknown {sorted(unknown)}; valid: {sorted(SHAPES)}")
    # built from the config's model (models/tiny-moe-base) into models/bench-moe-tiny, models/bench-moe-large
    paths = {m: bench_model(Path(base.model.path), SHAPES[m], ROOT / "models" / f"bench-moe-{m}") for m in models}
    args.out.mkdir(parents=True, exist_ok=True)

    cells, started = [], time.perf_counter()
    runs = args.out / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"  # purerl's run dirs, one per cell
    for model in models:
        for length in args.lengths:
            for group in args.groups:
                for precision in precisions:
                    print(f"bench-sweep: {model}, {length} tokens, G={group}, {precision}", flush=True)
                    cells.append(run_cell(args, runs, model, paths[model], length, group, precision))
                    (args.out / "sweep.json").write_text(json.dumps({"cpu": cpu_name(), "cells": cells}, indent=2) + "\n")
    png = args.out / "sweep_speedup.png"
    plot(cells, png)
    if args.docs_img:
        shutil.copyfile(png, ROOT / args.docs_img)
    print_cells(cells)
    print(f"bench-sweep: {len(cells)} cells in {time.perf_counter() - started:.0f} s; wrote {args.out / 'sweep.json'} "
          f"and {png}")


if __name__ == "__main__":
    main()
