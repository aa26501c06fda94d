"""A real run through the CLI, as a user sees it: a quiet console (third-party output in <run dir>/logs/),
TensorBoard events holding the step metrics, eval files and curves every eval.every steps, samples.jsonl with the
rendered prompt, and a dataset mixing two data sources, each scored by its own terms, split in the metrics."""

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engines

OURS = re.compile(r"^(run dir: |config: |        \w|held-out accuracy (before|after) training: |step +\d+/\d+  reward |"
                  r"eval at step \d+: |eval figures by step: |  \S+ +[-\d.nan ]+$|done: )")


def mixed_dataset(path, n=16):
    """Addition rows of two sources: `default` (math + format) and `plain` (format only)."""
    rows = [{"question": f"What is {a} + {a + 3}?", "answer": str(2 * a + 3), "data_source": "default" if a % 2 else "plain"}
            for a in range(10, 10 + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_run_from_the_cli_is_quiet_and_leaves_curves_events_and_evals(tmp_path):
    run_dir = tmp_path / "run"
    data = mixed_dataset(tmp_path / "mixed.jsonl")
    args = ["trainer.steps=2", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=48",
            f"data.train={data}", f"data.eval={data}", "data.eval_size=8", "eval.every=1", "eval.n=2", "eval.k=[1,2]",
            f"eval.sets={{mixed: {{path: {data}, size: 8}}}}", "log.samples_every=1", "run.save_checkpoint=false",
            "reward.sources={plain: {terms: [{verifier: format}], accuracy_verifier: format}}", f"run.dir={run_dir}"]
    out = subprocess.run([sys.executable, "-m", "rl.train", "--config", "configs/tiny.yaml", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    console = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    assert [x for x in console if not OURS.match(x)] == [], "third-party output reached the console"
    assert any(x.startswith("eval figures by step:") for x in console)
    logs = {p.name for p in (run_dir / "logs").iterdir()}
    assert {"driver.log", "engine-0.log"} <= logs and (run_dir / "logs" / "engine-0.log").stat().st_size > 0

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]
    for m in lines[1:]:  # both sources on every step, each by its own terms
        assert {"reward/default/accuracy", "reward/plain/accuracy", "reward/math/mean", "eval/mixed/pass@2"} <= set(m)
    for step in (0, 1, 2):
        problems = [json.loads(x) for x in (run_dir / "eval" / f"mixed-step{step}.jsonl").read_text().splitlines()]
        assert len(problems) == 8 and all(p["n"] == 2 and 0 <= p["c"] <= 2 for p in problems)
        assert {p["data_source"] for p in problems} == {"default", "plain"}
    assert "eval/mixed/default/pass@1" in lines[2] and "eval/mixed/plain/pass@1" in lines[2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [1, 2]
    assert [e.value for e in events.Scalars("reward/mean")] == pytest.approx([m["reward/mean"] for m in lines[1:]])
    assert [e.step for e in events.Scalars("eval/mixed/pass@1")] == [0, 1, 2]

    plots = {p.name for p in (run_dir / "plots").iterdir()}
    assert {"reward.png", "response_length.png", "kl_entropy.png", "clip_fraction.png", "mismatch.png",
            "step_time.png", "eval.png", "routing_agreement.png"} <= plots
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and samples[0]["prompt"].endswith("Assistant: <think>")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["eval"]) == {"0", "1", "2"} and "mixed/maj@2" in summary["eval"]["2"]
    assert "template: r1_zero" in (run_dir / "config.yaml").read_text()
