"""`python -m rl.train` and `python -m rl.evaluate` stop on bad input with exit code 2 and a message naming it.

No engine starts in these tests: every check runs before Ray and vLLM are touched.
"""

import pytest

from rl import evaluate, train


@pytest.mark.parametrize("main", [train.main, evaluate.main])
def test_unknown_key_exits_2_and_names_it(main, capsys):
    assert main(["--config", "configs/tiny.yaml", "trainer.lrr=1e-5"]) == 2
    assert "trainer.lrr" in capsys.readouterr().err


def test_wrong_type_exits_2_and_names_it(capsys):
    assert train.main(["--config", "configs/tiny.yaml", "rollout.n=eight"]) == 2
    assert "rollout.n" in capsys.readouterr().err


def test_missing_model_exits_2_and_says_how_to_build(tmp_path, capsys):
    code = train.main(["--config", "configs/tiny.yaml", f"run.dir={tmp_path}/run", f"model.path={tmp_path}/nowhere"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "make base-model" in err


def test_broken_dataset_exits_2_and_names_the_row(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    code = train.main(["--config", "configs/tiny.yaml", f"run.dir={tmp_path}/run", f"data.train={bad}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "answer" in err


def test_evaluate_missing_checkpoint_exits_2(tmp_path, capsys):
    assert evaluate.main(["--config", "configs/tiny.yaml", "--checkpoint", str(tmp_path / "ckpt")]) == 2
    assert "ckpt" in capsys.readouterr().err


def test_used_run_dir_is_refused_not_appended(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert train.main(["--config", "configs/tiny.yaml", f"run.dir={tmp_path}"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_unknown_weight_transfer_backend_exits_2_listing_the_registered(tmp_path, capsys):
    assert train.main(["--config", "configs/tiny.yaml", f"run.dir={tmp_path}/run", "rollout.weight_transfer=pigeon"]) == 2
    err = capsys.readouterr().err
    assert "rollout.weight_transfer 'pigeon' is not a registered weight-transfer backend" in err
    assert "nccl" in err and "purerl" in err


def test_a_response_budget_past_the_model_positions_exits_2_naming_both(tmp_path, capsys):
    """models/tiny-moe-base has 512 positions: 500 new tokens after the longest prompt cannot fit an engine."""
    code = train.main(["--config", "configs/tiny.yaml", f"run.dir={tmp_path}/run", "rollout.max_new_tokens=500"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rollout.max_new_tokens=500" in err and "512 positions" in err and "max_position_embeddings" in err
