"""The peer side of `make bench`: TRL's GRPOTrainer on the same model, prompts and settings as purerl.

Runs in .venv-bench (TRL layered over .venv). Prints one JSON line: per-step wall times, or the error.
`python scripts/bench_trl.py --model M --prompts P --n G --max-new-tokens T --steps S --mode transformers|vllm`
(`--min-new-tokens T` makes every answer T tokens long; `--micro-batch M` accumulates the step's gradient over
micro-batches of M sequences, as purerl's trainer.micro_batch_size does; `--bf16` is TRL's bf16=True)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def math_and_format(completions, answer, **_) -> list[float]:
    """TRL's reward function: the same verifiers and weights as configs/tiny.yaml, through rewards.score_batch."""
    import rewards

    items = [(v, c, a, {}) for v in ("math", "format") for c, a in zip(completions, answer)]
    res = rewards.score_batch(items, workers=2, timeout_s=5.0)
    n = len(completions)
    return [res[i].score + 0.1 * res[n + i].score for i in range(n)]


def step_timer():
    """A TrainerCallback that appends each optimizer step's wall time to its `times`."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t)

    return StepTimes()


def grpo_config(args):
    """TRL's GRPOConfig for purerl's work point: one generation of the whole batch per optimizer step
    (steps_per_generation defaults to the accumulation), micro-batches by gradient accumulation."""
    from trl import GRPOConfig

    batch = args.prompts * args.n
    micro = args.micro_batch or batch
    if batch % micro:
        raise ValueError(f"--micro-batch {micro} must divide the step's {batch} sequences")
    extra = {"generation_kwargs": {"min_new_tokens": args.min_new_tokens}} if args.min_new_tokens else {}
    if args.mode == "vllm":
        extra |= {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3, "vllm_enable_sleep_mode": False}
    return GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=micro,
        num_generations=args.n, max_completion_length=args.max_new_tokens, max_steps=args.steps,
        learning_rate=args.lr, beta=args.beta, temperature=1.0, top_p=1.0, loss_type="grpo", epsilon=0.2,
        num_iterations=1, gradient_accumulation_steps=batch // micro, max_grad_norm=1.0, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, bf16=args.bf16, seed=0, shuffle_dataset=False, dataloader_num_workers=0,
        **extra,
    )


def run(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from rl.data import apply_template, load_prompts

    rows = load_prompts(args.train)[: args.prompts * args.steps]
    data = Dataset.from_list([{"prompt": apply_template(r.question, "r1_zero"), "answer": r.answer} for r in rows])
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    times = step_timer()
    trainer = GRPOTrainer(model=model, reward_funcs=[math_and_format], args=grpo_config(args), train_dataset=data,
                          processing_class=tok, callbacks=[times])
    # TRL's own step split: `_generate` samples the completions; `_generate_and_score_completions` wraps it and
    # adds rewards, advantages and the old/reference logprob forwards; the rest of the step is the training.
    parts = {"generate_s": [], "prepare_s": []}
    for key, name in (("generate_s", "_generate"), ("prepare_s", "_generate_and_score_completions")):
        setattr(trainer, name, timed(getattr(trainer, name), parts[key]))
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"mode": args.mode, "step_s": times.times, **parts, "completion_tokens": lengths,
            "threads": torch.get_num_threads()}


def timed(fn, out: list[float]):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        out.append(time.perf_counter() - t)
        return result

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for name, tp in [("--model", str), ("--train", str), ("--prompts", int), ("--n", int), ("--max-new-tokens", int),
                     ("--steps", int), ("--lr", float), ("--beta", float), ("--mode", str)]:
        p.add_argument(name, type=tp, required=True)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--micro-batch", type=int, default=0, help="0: the whole batch")
    p.add_argument("--bf16", action="store_true", help="TRL's bf16=True (bf16 autocast over fp32 weights)")
    args = p.parse_args()
    try:
        out = run(args)
    except Exception as e:  # the bench reports a mode that fails instead of crashing
        out = {"mode": args.mode, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    print("BENCH_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
