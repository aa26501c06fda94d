"""Bad input as users meet it: every malformed config, dataset, model folder, checkpoint and reward plug-in ends in
one line naming the file (and the line, row or key) and the problem, exit code 2, no traceback, before Ray or an
engine starts. A table of hand-written cases, then hypothesis-driven mutations of valid inputs."""

import json
import shutil
from pathlib import Path

import pytest

from rl import evaluate, train

HERE = Path(__file__).resolve().parent.parent
BASE = HERE / "models" / "tiny-moe-base"
GOOD_ROWS = [{"question": f"{a} + {a}?", "answer": str(2 * a)} for a in range(3)]


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def model_copy(tmp: Path, change=None) -> Path:
    """models/tiny-moe-base copied, with `change(folder)` applied."""
    out = tmp / "model"
    shutil.copytree(BASE, out)
    if change:
        change(out)
    return out


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def parquet(path: Path, rows) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"question": pa.array([], pa.string()),
                                                                        "answer": pa.array([], pa.string())}), path)
    return path


def damaged_checkpoint(tmp: Path, what: str) -> Path:
    """A run dir whose checkpoint step-000001 is a copy of the base model with a train state, `what` damaged."""
    import torch

    ckpt = tmp / "run" / "checkpoints" / "step-000001"
    shutil.copytree(BASE, ckpt)
    torch.save({"step": 1, "sampler": {}}, ckpt / "train_state.pt")
    truncate(ckpt / ("train_state.pt" if what == "state" else "model.safetensors"))
    return tmp / "run"


# (name, args builder (tmp -> CLI args), substrings the one-line error must hold)
CASES = [
    # configs
    ("yaml syntax", lambda t: ["--config", str(write(t / "c.yaml", "trainer:\n  lr: [1\n"))],
     ["c.yaml", "line 3", "did not find expected"]),
    ("yaml duplicate key", lambda t: ["--config", str(write(t / "c.yaml", "rollout:\n  n: 4\n  n: 8\n"))],
     ["c.yaml", "line 3", "duplicate key n"]),
    ("yaml list at the top", lambda t: ["--config", str(write(t / "c.yaml", "- a\n- b\n"))], ["c.yaml", "mapping"]),
    ("yaml tab", lambda t: ["--config", str(write(t / "c.yaml", "rollout:\n\tn: 4\n"))], ["c.yaml", "line 2"]),
    ("yaml not UTF-8", lambda t: ["--config", str(write(t / "c.yaml", b"rollout:\n  n: \xff\xfe\n"))], ["c.yaml"]),
    ("unknown key", lambda t: ["trainer.lrr=1e-5"], ["trainer.lrr", "valid keys"]),
    ("wrong type", lambda t: ["rollout.n=eight"], ["rollout.n", "expected int"]),
    ("invalid value", lambda t: ["rollout.n=1"], ["rollout.n", "must be >= 2"]),
    ("missing config", lambda t: ["--config", str(t / "nowhere.yaml")], ["nowhere.yaml", "not found"]),
    ("override without =", lambda t: ["trainer.lr"], ["trainer.lr", "key=value"]),
    ("override bad yaml", lambda t: ["trainer.lr=[1"], ["trainer.lr=[1", "not valid YAML"]),
    ("unknown loss", lambda t: ["algo.loss=ppo2"], ["algo.loss", "ppo2", "ppo_clip"]),
    ("bad eval k", lambda t: ["eval.k=[9]"], ["eval.k", "1..eval.n"]),
    # datasets
    ("empty jsonl", lambda t: [f"data.train={write(t / 'd.jsonl', '')}"], ["d.jsonl", "empty"]),
    ("malformed jsonl line", lambda t: [f"data.train={write(t / 'd.jsonl', jsonl(GOOD_ROWS) + '{oops}' + chr(10))}"],
     ["d.jsonl", "line 4", "not valid JSON"]),
    ("jsonl not UTF-8", lambda t: [f"data.train={write(t / 'd.jsonl', jsonl(GOOD_ROWS).encode() + bytes([255]))}"],
     ["d.jsonl", "line 4", "not UTF-8"]),
    ("jsonl list row", lambda t: [f"data.train={write(t / 'd.jsonl', '[1, 2]' + chr(10))}"],
     ["d.jsonl", "line 1", "not an object"]),
    ("jsonl only blank lines", lambda t: [f"data.train={write(t / 'd.jsonl', chr(10) * 3)}"], ["d.jsonl", "empty"]),
    ("truncated json", lambda t: [f"data.train={write(t / 'd.json', json.dumps(GOOD_ROWS)[:40])}"],
     ["d.json", "not valid JSON", "line 1"]),
    ("json with a non-object row", lambda t: [f"data.train={write(t / 'd.json', json.dumps([GOOD_ROWS[0], 3]))}"],
     ["d.json", "row 1", "not an object"]),
    ("json empty list", lambda t: [f"data.train={write(t / 'd.json', '[]')}"], ["d.json", "empty"]),
    ("parquet garbage", lambda t: [f"data.train={write(t / 'd.parquet', b'not a parquet file')}"],
     ["d.parquet", "not a readable Parquet file"]),
    ("parquet truncated", lambda t: [f"data.train={_truncated_parquet(t)}"], ["d.parquet", "not a readable Parquet"]),
    ("parquet no rows", lambda t: [f"data.train={parquet(t / 'd.parquet', [])}"], ["d.parquet", "empty"]),
    ("row without answer", lambda t: [f"data.train={write(t / 'd.jsonl', jsonl([{'question': 'q?'}]))}"],
     ["d.jsonl", "row 0", "answer"]),
    ("row with empty prompt", lambda t: [f"data.train={write(t / 'd.jsonl', jsonl([{'question': ' ', 'answer': '1'}]))}"],
     ["d.jsonl", "row 0", "non-empty"]),
    ("csv file", lambda t: [f"data.train={write(t / 'd.csv', 'question,answer' + chr(10) + '1,2' + chr(10))}"],
     ["d.csv", "unsupported"]),
    ("missing dataset", lambda t: [f"data.train={t / 'none.jsonl'}"], ["none.jsonl", "not found"]),
    ("missing eval set", lambda t: [f"eval.sets.heldout.path={t / 'none.jsonl'}"], ["none.jsonl", "not found"]),
    ("unknown format", lambda t: ["data.format=csvish"], ["data.format", "csvish"]),
    ("reasoning-gym unknown task", lambda t: ["data.train=reasoning_gym:nosuch?size=4&seed=1"],
     ["reasoning_gym:nosuch", "not registered"]),
    ("reasoning-gym bad parameter", lambda t: ["data.train=reasoning_gym:countdown?size=4&seed=1&bogus=2"],
     ["reasoning_gym:countdown", "bogus"]),
    ("reasoning-gym no size", lambda t: ["data.train=reasoning_gym:countdown?seed=1"], ["size=N&seed=S"]),
    # model folders
    ("model path missing", lambda t: [f"model.path={t / 'nomodel'}"], ["nomodel", "not found"]),
    ("no config.json", lambda t: [f"model.path={model_copy(t, lambda m: (m / 'config.json').unlink())}"],
     ["no config.json"]),
    ("config.json not JSON", lambda t: [f"model.path={model_copy(t, lambda m: truncate(m / 'config.json'))}"],
     ["config.json", "not valid JSON", "line"]),
    ("config.json without model_type", lambda t: [f"model.path={model_copy(t, lambda m: write(m / 'config.json', '{}'))}"],
     ["config.json", "model_type"]),
    ("config.json not UTF-8", lambda t: [f"model.path={model_copy(t, lambda m: write(m / 'config.json', bytes([255, 254])))}"],
     ["config.json", "UTF-8"]),
    ("no weights", lambda t: [f"model.path={model_copy(t, lambda m: (m / 'model.safetensors').unlink())}"],
     ["no weights", "model.safetensors"]),
    ("truncated weights", lambda t: [f"model.path={model_copy(t, lambda m: truncate(m / 'model.safetensors'))}"],
     ["model.safetensors", "damaged or incomplete"]),
    ("garbage weights", lambda t: [f"model.path={model_copy(t, lambda m: write(m / 'model.safetensors', b'x' * 64))}"],
     ["model.safetensors", "damaged or incomplete"]),
    ("no tokenizer", lambda t: [f"model.path={model_copy(t, _no_tokenizer)}"], ["tokenizer is missing"]),
    ("tokenizer.json not JSON", lambda t: [f"model.path={model_copy(t, lambda m: truncate(m / 'tokenizer.json'))}"],
     ["tokenizer.json", "not valid JSON"]),
    # reward plug-ins
    ("plug-in module missing", lambda t: _terms("mymod:fn"), ["mymod:fn", "no module named 'mymod'"]),
    ("plug-in attribute missing", lambda t: _terms("json:nope"), ["json:nope", "has no 'nope'"]),
    ("plug-in not callable", lambda t: _terms("json:__name__"), ["json:__name__", "not a callable"]),
    ("unknown verifier", lambda t: _terms("maths"), ["maths", "known:"]),
    ("bad factory call", lambda t: _terms("format(0.2)"), ["format(0.2)", "keyword"]),
    # checkpoints
    ("resume without checkpoint", lambda t: [f"run.dir={t / 'run'}", "run.resume=true"], ["no complete checkpoint"]),
    ("resume, damaged state", lambda t: [f"run.dir={damaged_checkpoint(t, 'state')}", "run.resume=true"],
     ["train_state.pt", "damaged"]),
    ("resume, truncated weights", lambda t: [f"run.dir={damaged_checkpoint(t, 'weights')}", "run.resume=true"],
     ["model.safetensors", "damaged or incomplete"]),
]

EVAL_CASES = [
    ("eval checkpoint missing", lambda t: ["--checkpoint", str(t / "ckpt")], ["ckpt", "not found"]),
    ("eval checkpoint truncated", lambda t: ["--checkpoint", str(model_copy(t, lambda m: truncate(m / "model.safetensors")))],
     ["model.safetensors", "damaged or incomplete"]),
]


def _truncated_parquet(t: Path) -> Path:
    path = parquet(t / "d.parquet", GOOD_ROWS * 20)
    truncate(path, 0.6)
    return path


def _no_tokenizer(m: Path) -> None:
    for f in m.glob("tokenizer*"):
        f.unlink()


def _terms(verifier: str) -> list[str]:
    return [f"reward.terms=[{{verifier: '{verifier}'}}]", f"reward.accuracy_verifier={verifier}"]


def run(main, args: list[str], tmp: Path, capsys) -> tuple[int, str]:
    default_config = [] if "--config" in args else ["--config", "configs/tiny.yaml"]
    run_dir = [] if any(a.startswith("run.dir=") for a in args) or main is evaluate.main else [f"run.dir={tmp / 'r'}"]
    code = main([*default_config, *args, *run_dir])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name,build,needles", CASES + [(n, b, x) for n, b, x in EVAL_CASES],
                         ids=[c[0] for c in CASES + EVAL_CASES])
def test_bad_input_is_one_clear_line(name, build, needles, tmp_path, capsys):
    main = evaluate.main if name.startswith("eval ") else train.main
    code, out = run(main, build(tmp_path), tmp_path, capsys)
    errors = [line for line in out.splitlines() if line.startswith(("error:", "config error:"))]
    assert code == 2, out[-800:]
    assert "Traceback" not in out and len(errors) == 1, out[-800:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def test_the_table_covers_every_kind_of_input():
    assert len(CASES) + len(EVAL_CASES) >= 40


# --- generated cases: valid inputs, mutated; whatever the mutation, a UserError or a clean load ----------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rl.config import load_config  # noqa: E402
from rl.data.prompts import load_prompts  # noqa: E402
from rl.errors import UserError  # noqa: E402
from rl.trainer.policy import load_tokenizer, resolve_model_path  # noqa: E402

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MUTATION = st.tuples(st.integers(0, 10_000), st.integers(0, 40), st.binary(max_size=12))


def mutate(data: bytes, edit) -> bytes:
    """Bytes [at, at + cut) replaced by `insert` (positions wrap around the data)."""
    at, cut, insert = edit
    at %= max(len(data), 1)
    return data[:at] + insert + data[at + cut:]


def accepts_or_says_why(load, *args) -> None:
    try:
        load(*args)
    except UserError:
        pass


@FAST
@given(edit=MUTATION)
def test_a_mutated_config_loads_or_says_why(edit, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(mutate((HERE / "configs" / "tiny.yaml").read_bytes(), edit))
    accepts_or_says_why(load_config, path)


@FAST
@given(edit=MUTATION)
def test_a_mutated_jsonl_loads_or_says_why(edit, tmp_path_factory):
    lines = (HERE / "rl" / "tasks" / "arithmetic" / "data" / "train.jsonl").read_bytes().splitlines(keepends=True)[:20]
    path = tmp_path_factory.mktemp("jsonl") / "d.jsonl"
    path.write_bytes(mutate(b"".join(lines), edit))
    accepts_or_says_why(load_prompts, str(path))


@FAST
@given(edit=MUTATION)
def test_a_mutated_parquet_loads_or_says_why(edit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pq")
    path = parquet(folder / "d.parquet", GOOD_ROWS * 10)
    path.write_bytes(mutate(path.read_bytes(), edit))
    accepts_or_says_why(load_prompts, str(path))


@FAST
@given(name=st.sampled_from(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                             "generation_config.json"]), how=st.sampled_from(["delete", "truncate", "garble"]),
       keep=st.floats(0.0, 0.99))
def test_a_damaged_model_folder_loads_or_says_why(name, how, keep, tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / "model"
    shutil.copytree(BASE, folder, ignore=shutil.ignore_patterns("*.log"))
    target = folder / name
    if how == "delete":
        target.unlink()
    elif how == "truncate":
        truncate(target, keep)
    else:
        target.write_bytes(mutate(target.read_bytes(), (int(keep * 1000), 8, b"\x00\xff{")))
    accepts_or_says_why(lambda: load_tokenizer(resolve_model_path(str(folder))))


# --- a failing verifier is loud, and a run that keeps failing stops -----------------------------------------

LOUD = ["trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=16", "trainer.steps=4",
        "run.eval_before=false", "run.eval_after=false", "reward.max_error_steps=2", "log.plot=false"]


@pytest.mark.engines
def test_a_raising_verifier_is_said_and_stops_the_run_with_a_checkpoint(tmp_path, capfd):
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    code = train.main(["--config", "configs/tiny.yaml", *LOUD, *_terms("failing_verifiers:always_raises"),
                       f"run.dir={run_dir}"])
    out = capfd.readouterr()  # the console is fd 1: the run keeps the libraries' output in its logs/
    said = [line for line in out.out.splitlines() if line.startswith("reward: verifier")]
    assert code == 2 and "Traceback" not in out.err
    assert len(said) == 1 and "always_raises raised ValueError: boom; the sample is masked" in said[0]  # once
    assert "2 steps in a row masked more than 50% of the samples" in out.err and "ValueError: boom" in out.err
    assert "Checkpoint of step 2" in out.err
    log = (run_dir / "logs" / "rewards.log").read_text()
    assert log.count("--- verifier 'failing_verifiers:always_raises'") == 32 and 'raise ValueError("boom")' in log
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["reward/masked"] for m in steps] == [16, 16] and [m["reward/samples"] for m in steps] == [16, 16]
    weights = load_file(run_dir / "checkpoints" / "step-000002" / "model.safetensors")
    base = load_file(BASE / "model.safetensors")
    assert all(torch_equal(weights[k], base[k]) for k in base)  # nothing trained on masked samples


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


@pytest.mark.engines
def test_a_verifier_that_returns_no_reward_is_named(tmp_path, capfd):
    code = train.main(["--config", "configs/tiny.yaml", *LOUD, "trainer.steps=1", *_terms("failing_verifiers:returns_float"),
                       f"run.dir={tmp_path / 'run'}"])
    out = capfd.readouterr().out
    assert code == 0 and "verifier 'failing_verifiers:returns_float' failed on prompt" in out
    assert "returns_float returned float, not a Reward" in out and "masked 16/16" in out
