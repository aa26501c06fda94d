"""score_batch: order, hard time limit (kill + replace), crash and pickling errors, worker reuse."""

import os
import time

import pytest

import rewards
from rewards import Reward, score_batch


def hang_verifier(response, reference, **metadata):
    """Test helper: ignores the soft alarm (blocks SIGALRM) and spins, so only the hard kill can stop it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    while True:
        pass


def crash_verifier(response, reference, **metadata):
    os._exit(3)


def dies_once_verifier(response, reference, **metadata):
    """Test helper: the first worker to score it is SIGKILLed (as by the OOM killer or a chaos run); the next scores it."""
    import signal
    from pathlib import Path

    mark = Path(metadata["mark"])
    if not mark.exists():
        mark.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return Reward.ok(score=1.0)


def pid_verifier(response, reference, **metadata):
    return Reward.ok(pid=os.getpid())


def bad_return_verifier(response, reference, **metadata):
    return 1.0


HERE = __name__  # importable by the workers: pytest puts tests/ on sys.path, which the pool forwards


def test_results_keep_order_and_values():
    items = [("math", f"\\boxed{{{i}}}", str(i if i % 2 else i + 1), {}) for i in range(40)]
    out = score_batch(items, workers=2)
    assert [r.score for r in out] == [1.0 if i % 2 else 0.0 for i in range(40)]
    assert [r.status for r in out] == ["ok" if i % 2 else "wrong" for i in range(40)]


def test_hung_item_is_killed_and_others_are_scored():
    items = [("math", "\\boxed{1}", "1", {})] * 3 + [(f"{HERE}:hang_verifier", "x", None, {})] + [("math", "\\boxed{2}", "2", {})] * 3
    t0 = time.monotonic()
    out = score_batch(items, workers=2, timeout_s=2.0)
    assert time.monotonic() - t0 < 30  # generous: the hung item must not stall the batch
    assert out[3].status == "timeout" and out[3].score == 0.0
    assert out[3].info["reason"].startswith("hard time limit")
    assert [r.status for i, r in enumerate(out) if i != 3] == ["ok"] * 6
    again = score_batch([("math", "\\boxed{5}", "5", {})] * 4, workers=2)  # the replaced worker works
    assert [r.status for r in again] == ["ok"] * 4


def test_worker_crash_is_error_not_zero():
    out = score_batch([(f"{HERE}:crash_verifier", "x", None, {}), ("math", "\\boxed{4}", "4", {})], workers=2)
    assert out[0].status == "error" and "died twice on this item" in out[0].info["reason"]
    assert out[1].status == "ok"


def test_a_worker_killed_under_an_item_loses_no_item(tmp_path, caplog):
    items = [("math", "\\boxed{1}", "1", {}), (f"{HERE}:dies_once_verifier", "x", None, {"mark": str(tmp_path / "m")}),
             ("math", "\\boxed{2}", "3", {})]
    out = score_batch(items, workers=2)
    assert [(r.status, r.score) for r in out] == [("ok", 1.0), ("ok", 1.0), ("wrong", 0.0)]
    assert "died (exit code -9) while scoring; scoring its item again" in caplog.text


def test_unpicklable_item_and_bad_return_are_errors():
    out = score_batch(
        [("math", "\\boxed{1}", "1", {"f": lambda: 0}), (f"{HERE}:bad_return_verifier", "x", None, {})], workers=2
    )
    assert out[0].status == "error" and "picklable" in out[0].info["reason"]
    assert out[1].status == "error" and "not a Reward" in out[1].info["reason"]


def test_workers_are_reused_across_calls_and_not_the_parent():
    pids1 = {r.info["pid"] for r in score_batch([(f"{HERE}:pid_verifier", "", None, {})] * 8, workers=2)}
    pids2 = {r.info["pid"] for r in score_batch([(f"{HERE}:pid_verifier", "", None, {})] * 8, workers=2)}
    # which worker takes which item is up to the scheduler (one may take all 8), so compare the union: fresh
    # workers for the second call would make it larger than the pool
    assert os.getpid() not in pids1 | pids2
    assert len(pids1 | pids2) <= 2


def test_factory_product_runs_in_pool():
    strict, lenient = rewards.format_reward(), rewards.format_reward(partial_credit=0.25)
    bad = "reasoning</think> text <answer>5</answer> trailing"
    out = score_batch([(strict, bad, None, {}), (lenient, bad, None, {})], workers=2)
    assert [(r.score, r.status) for r in out] == [(0.0, "wrong"), (0.25, "wrong")]
    assert lenient.name == "format(prompt_has_think_open=True, partial_credit=0.25)"


def test_unknown_verifier_raises_before_work():
    with pytest.raises(KeyError, match="known: .*code.*format.*math"):
        score_batch([("nope", "x", None, {})])


def test_close_pool_then_reuse():
    rewards.close_pool()
    assert score_batch([("math", "\\boxed{7}", "7", {})], workers=1)[0].status == "ok"
