"""Fixed-length answers (`rollout.min_new_tokens`, the work of `make bench-sweep`): the config's bounds, the
sampling settings and vLLM's SamplingParams they become, and the sweep's picture."""

import sys
from pathlib import Path

import pytest

from rl.collect.generate import sampling
from rl.config import ConfigError, load_config


def test_min_new_tokens_reaches_the_sampling_settings():
    cfg = load_config("configs/tiny.yaml", ["rollout.max_new_tokens=32", "rollout.min_new_tokens=32"])
    s = sampling(cfg.rollout, cfg.rollout.n)
    assert (s.min_new_tokens, s.max_new_tokens, s.stop) == (32, 32, ("</answer>",))
    assert sampling(load_config("configs/tiny.yaml").rollout, 1).min_new_tokens == 0  # the default: EOS ends an answer


@pytest.mark.parametrize("value", ["-1", "65"])
def test_min_new_tokens_outside_0_to_max_names_the_key(value):
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny.yaml", ["rollout.max_new_tokens=64", f"rollout.min_new_tokens={value}"])
    assert "rollout.min_new_tokens" in str(e.value)


def test_vllm_gets_min_tokens():
    pytest.importorskip("vllm")
    from rollout.engine import sampling_params

    cfg = load_config("configs/tiny.yaml", ["rollout.max_new_tokens=16", "rollout.min_new_tokens=16"])
    params = sampling_params(sampling(cfg.rollout, 2))
    assert (params.min_tokens, params.max_tokens, params.n) == (16, 16, 2)


def test_sweep_plot_writes_a_png(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from bench_sweep import plot

    cells = [{"model": m, "group_size": g, "response_tokens": t, "speedup_vs_trl": s}
             for m in ("tiny", "large") for g in (8, 16) for t, s in ((64, 1.0), (256, 1.5), (1024, None))]
    plot(cells, tmp_path / "sweep.png")  # a cell whose TRL side failed (speedup None) is left out
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
