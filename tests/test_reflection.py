"""response/reflection_rate (log.reflection_markers): the share of responses that check a candidate and revise it,
counted by a task's own miss-and-retry markers, and drawn beside the length and the accuracy."""

import pytest

from rollout.types import Completion, RolloutGroup


def test_reflection_rate_counts_responses_with_a_marker_and_is_plotted(tmp_path):
    import json

    from rl.collect.generate import reflection_rate
    from rl.config import load_config
    from rl.errors import ConfigError
    from rl.run.plot import plot_run

    texts = ["try 1+2=3 no, try 2+1=3 yes", "guess", "no, try again", "no,try"]
    groups = [RolloutGroup(0, [5], [Completion([1], t, [-1.0], "stop") for t in texts[:2]]),
              RolloutGroup(1, [6], [Completion([1], t, [-1.0], "stop") for t in texts[2:]])]
    assert reflection_rate(groups, ["no, try"]) == 0.5 and reflection_rate(groups, ["no, try", "no,try"]) == 0.75
    with pytest.raises(ConfigError, match="log.reflection_markers"):
        load_config("configs/tiny.yaml", ["log.reflection_markers=['']"])
    rows = [{"step": i, "reward/accuracy": 0.1 * i, "response/len_mean": 10.0 * i, "response/reflection_rate": 0.2 * i}
            for i in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "overview.png" in {p.name for p in plot_run(tmp_path)}
