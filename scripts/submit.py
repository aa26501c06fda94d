"""`make submit`: `ray job submit` of a training run to the cluster at RAY_ADDRESS, carrying this folder.

The runtime_env's working_dir is the repository without the virtual environments, runs and caches; the model the
config trains and the datasets go with it, the other folders under models/ stay here (Ray refuses a working_dir
over 100 MiB; a hub model id is fetched on the cluster instead). Blocks and streams the
job's logs; the exit status is the job's. The job's entrypoint is the supervisor (run.supervise) when the run
writes checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCLUDES = [".venv", ".venv-bench", "runs", ".git", ".pytest_cache", ".ruff_cache", "**/__pycache__", "*.tmp",
            "*.egg-info", "build"]


def unused_models(root: Path, model_path: str) -> list[str]:
    """The folders under root/models the run does not load (every one when model_path lies elsewhere)."""
    used = (root / model_path).resolve()
    return [f"models/{d.name}" for d in sorted((root / "models").glob("*")) if d.is_dir() and d.resolve() != used]


def where_outputs_go(run_dir: str) -> str:
    """Why a job may not write its outputs there (empty: it may): a relative run.dir, the default included, would
    land in Ray's temporary copy of the job's working directory on whichever node the driver runs, and be lost."""
    from rl.storage import is_uri

    if run_dir and (is_uri(run_dir) or Path(run_dir.removeprefix("file://")).is_absolute()):
        return ""
    return (f"run.dir {run_dir or '(empty: runs/<timestamp>)'} is relative: the job would write its outputs into "
            f"Ray's temporary copy of its working directory, which is not kept. Give RUN_DIR=/shared/mount/run (a "
            f"folder every node sees) or RUN_DIR='s3://bucket/run' (docs/cluster.md, \"Where a run's outputs go\")")


def runtime_env(model_path: str) -> dict:
    # rl.session.init_ray adds the engine's variables; a key set in both places is an error in Ray
    return {"working_dir": str(ROOT), "excludes": EXCLUDES + unused_models(ROOT, model_path),
            "env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}


def command(config: str, overrides: list[str], model_path: str) -> list[str]:
    if not os.environ.get("RAY_ADDRESS"):
        raise SystemExit("make submit: set RAY_ADDRESS to the cluster's dashboard, e.g. http://127.0.0.1:8265")
    ray = str(Path(sys.executable).with_name("ray"))
    return [ray, "job", "submit", "--address", os.environ["RAY_ADDRESS"], "--runtime-env-json",
            json.dumps(runtime_env(model_path)), "--", "python", "-m", "rl.train", "--config", config, *overrides]


def supervised(overrides: list[str], save_every: int) -> tuple[list[str], str]:
    """make submit runs the driver under the supervisor (run.supervise) unless the overrides say otherwise or the
    run writes no checkpoint to resume from; the overrides to send, and a line saying why not when it does not."""
    if any(o.startswith("run.supervise=") for o in overrides):
        return overrides, ""
    if save_every == 0:
        return overrides, "make submit: the job runs unsupervised: run.save_every=0 writes no checkpoint to resume from"
    return [*overrides, "run.supervise=true"], ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    from rl.config import ConfigError, load_config

    try:
        cfg = load_config(ROOT / args.config, args.overrides)  # a bad config fails here, not on the cluster
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    refusal = where_outputs_go(cfg.run.dir)
    if refusal:
        print(f"make submit: {refusal}", file=sys.stderr)
        return 2
    overrides, note = supervised(args.overrides, cfg.run.save_every)
    if note:
        print(note, file=sys.stderr)
    env = dict(os.environ)
    token = Path(env.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in env and (token.is_file() or env.get("RAY_AUTH_TOKEN")):
        env["RAY_AUTH_MODE"] = "token"  # the head (ray start) checks tokens; the job client sends one only if asked
    env["RAY_RUNTIME_ENV_IGNORE_GITIGNORE"] = "1"  # models/ is git-ignored but the job needs it; EXCLUDES apply
    return subprocess.call(command(args.config, overrides, cfg.model.path), cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
