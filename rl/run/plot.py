"""The curves of a run, as PNGs in <run dir>/plots/: `make plot RUN=<dir>` (also at the end of `make train`).

`python -m rl.run.plot runs/x` draws, from metrics.jsonl: reward and accuracy, response length (R1-Zero's
signature), KL and entropy, clip fraction, the trainer/vLLM gap and the routing agreement, the step-time split
(stacked), the eval figures over steps, an overview (response length, the reflection rate when measured, and
accuracy), and with tools the call rate beside the accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PANELS = [  # file, title, y label, [(metric, label)]
    ("reward.png", "Reward and accuracy", "per sample", [("reward/mean", "reward (weighted total)"),
                                                         ("reward/accuracy", "accuracy")]),
    ("response_length.png", "Response length", "tokens", [("response/len_mean", "mean"), ("response/len_max", "max")]),
    ("kl_entropy.png", "KL to the reference and policy entropy", "nats per token",
     [("loss/kl", "KL (k-estimator)"), ("policy/entropy", "entropy")]),
    ("clip_fraction.png", "Clipped tokens", "share of response tokens", [("loss/clip_frac", "clip fraction")]),
    ("mismatch.png", "Trainer / vLLM mismatch", "|logprob difference| (nats)",
     [("rollout/logprob_abs_diff_max", "max"), ("rollout/logprob_abs_diff_mean", "mean")]),
]
TIMES = [("time/generate", "generate"), ("time/reward", "reward"), ("time/train", "train"), ("time/sync", "sync")]


def read(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics to plot (is {run_dir} a run directory?)")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def series(lines: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(m["step"], m[key]) for m in lines if isinstance(m.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: Path) -> list[Path]:
    """Writes every panel that has data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    lines, out = read(run_dir), Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    written = [p for p in (_line_panel(lines, out, *panel) for panel in PANELS) if p]
    written += [p for p in (_routing_panel(lines, out), _time_panel(lines, out), _eval_panel(lines, out),
                            _overview(lines, out), _tools_panel(lines, out)) if p]
    return written


def _figure(title: str, ylabel: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, path: Path, ax) -> Path:
    import matplotlib.pyplot as plt

    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _line_panel(lines, out: Path, name: str, title: str, ylabel: str, keys) -> Path | None:
    drawn = [(k, label, *series(lines, k)) for k, label in keys]
    drawn = [d for d in drawn if d[2]]
    if not drawn:
        return None
    fig, ax = _figure(title, ylabel)
    for _, label, xs, ys in drawn:
        ax.plot(xs, ys, marker="." if len(xs) < 60 else None, label=label)
    if name == "mismatch.png":
        ax.set_yscale("log")
    return _save(fig, out / name, ax)


def _routing_panel(lines, out: Path) -> Path | None:
    xs, ys = series(lines, "moe/routing_agreement")
    if not xs:
        return None
    fig, ax = _figure("Routing agreement, trainer vs the engine", "share of (token, layer) pairs")
    ax.plot(xs, ys, marker=".", label="moe/routing_agreement")
    return _save(fig, out / "routing_agreement.png", ax)


def _tools_panel(lines, out: Path) -> Path | None:
    """rollout.tools: how often the answers call the tool, beside how often they are right."""
    xs, ys = series(lines, "tools/call_rate")
    if not xs:
        return None
    fig, ax = _figure("Tool calls and accuracy", "share of answers")
    ax.plot(xs, ys, label="call rate (training samples)")
    ax.plot(*series(lines, "reward/accuracy"), label="accuracy (training samples)", alpha=0.7)
    ax.plot(*series(lines, "tools/void_rate"), label="void-turn rate", alpha=0.5)
    for k in sorted({k for m in lines for k in m if k.startswith("eval/") and k.endswith("/pass@1")}):
        ax.plot(*series(lines, k), marker="o", linestyle="none", label=f"{k.removeprefix('eval/')} (held-out)")
    ax.set_ylim(0, 1.02)
    return _save(fig, out / "tools.png", ax)


def _time_panel(lines, out: Path) -> Path | None:
    steps = [m["step"] for m in lines if "time/train" in m]
    if not steps:
        return None
    fig, ax = _figure("Step time, split", "seconds")
    stacks = [[m.get(k, 0.0) for m in lines if "time/train" in m] for k, _ in TIMES]
    ax.stackplot(steps, *stacks, labels=[label for _, label in TIMES])
    return _save(fig, out / "step_time.png", ax)


def _eval_panel(lines, out: Path) -> Path | None:
    keys = sorted({k for m in lines for k in m if k.startswith("eval/") and k.count("/") == 2})
    if not keys:
        return None
    fig, ax = _figure("Evaluation", "share of problems")
    for k in keys:
        xs, ys = series(lines, k)
        ax.plot(xs, ys, marker="o", label=k.removeprefix("eval/"))
    ax.set_ylim(0, 1.02)
    return _save(fig, out / "eval.png", ax)


def _overview(lines, out: Path) -> Path | None:
    """R1-Zero's story side by side: the responses grow, (with log.reflection_markers) more of them check and
    revise, and accuracy follows."""
    import matplotlib.pyplot as plt

    xs, lens = series(lines, "response/len_mean")
    if not xs:
        return None
    reflect = series(lines, "response/reflection_rate")
    fig, axes = plt.subplots(1, 3 if reflect[0] else 2, figsize=(14.4 if reflect[0] else 9.6, 3.4), dpi=100)
    axes[0].plot(xs, lens, marker=".")
    axes[0].set(title="Response length", xlabel="training step", ylabel="tokens (mean)")
    if reflect[0]:
        axes[1].plot(*reflect, marker=".", color="tab:purple")
        axes[1].set(title="Reflection", xlabel="training step", ylabel="share of responses", ylim=(0, 1.02))
    right = axes[-1]
    right.plot(*series(lines, "reward/accuracy"), label="training samples", alpha=0.6)
    evals = sorted({k for m in lines for k in m if k.startswith("eval/") and k.endswith(("/pass@1", "/greedy"))
                    and k.count("/") == 2})
    for k in evals:
        right.plot(*series(lines, k), marker="o", label=k.removeprefix("eval/"))
    right.set(title="Accuracy", xlabel="training step", ylabel="share correct", ylim=(0, 1.02))
    right.legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "overview.png")
    plt.close(fig)
    return out / "overview.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", help="a run folder, or its URI (s3://...): its metrics are downloaded, the plots uploaded")
    args = p.parse_args(argv)
    from rl.errors import UserError
    from rl.storage import RunStorage

    try:
        storage = RunStorage(args.run_dir)
        if storage.remote:
            storage.pull("metrics.jsonl")
        written = plot_run(storage.local)
        storage.sync()
    except (FileNotFoundError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(storage.where(p.relative_to(storage.local).as_posix()) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
