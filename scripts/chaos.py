"""make chaos: a seeded schedule of real faults over a supervised 40-step run of the default config with 2 trainer
ranks, then the run's data ledger and held-out accuracy against an undisturbed run of the same seed.

Faults (each at least once, 9 in all): SIGKILL of the engine, of a trainer rank, of a reward worker and of the
driver; SIGSTOP of a trainer rank and of the engine (hangs); the newest checkpoint cut short, then the driver killed
so that the resume meets it. Each is injected during a step, and detected and recovered by the run alone: this
script only watches the run's output and metrics. It prints every fault, when it was detected, and what recovered
it, and writes runs/chaos/report.json. Exit status 1 when a check fails:
- the data ledger (`data/indices` of every step) equals the undisturbed run's;
- the final held-out accuracy is within 0.02 of it;
- no fault took longer to detect than its deadline plus 30 s.

    make chaos                          (python scripts/chaos.py)
    make chaos ARGS="--seed 1 --steps 40"
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEADLINE_S = 60.0  # trainer.call_timeout_s and rollout.call_timeout_s of both runs
SLACK_S = 30.0  # the bound: detection within the deadline plus this
KINDS = ["engine_kill", "engine_stop", "rank_kill", "rank_stop", "reward_kill", "driver_kill", "checkpoint_truncate"]
# (how the run detects it, the line it prints then, what recovers it, the deadline knob or None: at once)
HOW = {
    "engine_kill": ("Ray reports the actor dead to the pool's wait", r"rollout engine \d+ died during",
                    "the pool starts the engine again with the last weights and sends its shard again", None),
    "engine_stop": ("the pool's deadline on the generate call", r"rollout engine \d+ .*did not answer",
                    "the pool kills the engine, starts it again and sends its shard again", "rollout.call_timeout_s"),
    "rank_kill": ("Ray reports the actor dead at the next trainer call", r"trainer rank \d+ .*died during",
                  "the healer rebuilds the trainer group from the last step's state and trains the step again",
                  "trainer.call_timeout_s"),
    "rank_stop": ("the group's deadline on the trainer call", r"trainer rank \d+ .*did not answer",
                  "the healer kills every rank, rebuilds the group and trains the step again", "trainer.call_timeout_s"),
    "reward_kill": ("the reward pool reads EOF on the worker's pipe", r"reward worker \d+ died",
                    "the pool starts a new worker and scores the item again", None),
    "driver_kill": ("the supervisor's wait on the driver returns", r"supervisor: the run ended with killed by SIGKILL",
                    "the supervisor resumes the run from its last checkpoint", None),
    "checkpoint_truncate": ("the resume checks the checkpoint's manifest", r"damaged",
                            "the resume sets it aside and resumes from the newest intact checkpoint", None),
}


@dataclass
class Fault:
    kind: str
    after_step: int  # injected once this many steps are logged
    injected_s: float = -1.0  # seconds into the run
    target: str = ""
    detected_s: float = -1.0
    recovered_s: float = -1.0  # the next step logged after detection
    log_line: str = ""


def schedule(seed: int, steps: int, save_every: int) -> list[Fault]:
    """Every kind once plus two drawn again, in a seeded order, one every few steps; the checkpoint is cut only
    where an older intact one exists (past two checkpoints)."""
    rng = random.Random(seed)
    kinds = KINDS + rng.sample(["engine_kill", "rank_kill", "reward_kill", "rank_stop"], 2)
    rng.shuffle(kinds)
    gap = max(2, (steps - 6) // len(kinds))
    at = [2 + i * gap + rng.randint(0, 1) for i in range(len(kinds))]
    cut = kinds.index("checkpoint_truncate")
    if at[cut] <= 2 * save_every:  # swap it with the first fault late enough
        later = next(i for i, a in enumerate(at) if a > 2 * save_every)
        kinds[cut], kinds[later] = kinds[later], kinds[cut]
    return [Fault(k, a) for k, a in zip(kinds, at)]


# ---- the processes of the run

def pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in found if int(p) != os.getpid())


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def when_busy(pid: int, busy_s: float, limit_s: float = 120.0) -> None:
    """Returns once `pid` has used `busy_s` of CPU from now (it is working), or after `limit_s`."""
    start, end = cpu_seconds(pid), time.time() + limit_s
    while cpu_seconds(pid) - start < busy_s and time.time() < end:
        time.sleep(0.005)


# ---- the run and what it says

@dataclass
class Run:
    proc: subprocess.Popen
    run_dir: Path
    began: float = field(default_factory=time.time)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds into the run, line)
    log: Path | None = None

    def now(self) -> float:
        return time.time() - self.began

    def read(self) -> None:
        """Keeps every line of the supervisor's output with the time it came (a thread)."""
        with open(self.log, "w") as out:
            for line in self.proc.stdout:
                self.lines.append((self.now(), line.rstrip()))
                out.write(line)
                out.flush()

    def steps(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for x in path.read_text().splitlines():
            try:
                rows.append(json.loads(x))
            except json.JSONDecodeError:  # a line being written
                break
        return [r for r in rows if "data/indices" in r]

    def driver(self) -> int | None:
        kids = children(self.proc.pid)
        return kids[0] if kids else None


def start(config: str, overrides: list[str], run_dir: Path, log: Path) -> Run:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rl.train", "--config", config, *overrides, f"run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    run = Run(proc, run_dir, log=log)
    threading.Thread(target=run.read, daemon=True).start()
    return run


def wait_for_step(run: Run, step: int) -> bool:
    while run.proc.poll() is None:
        if len(run.steps()) >= step:
            return True
        time.sleep(0.2)
    return False


# ---- the faults

def inject(run: Run, fault: Fault, rng: random.Random) -> None:
    """Sends the fault's signal to its target, mid-step (a busy engine or reward worker, a moment into the step)."""
    kind = fault.kind
    if kind in ("engine_kill", "engine_stop"):
        pid = rng.choice(pids("ray::RolloutWorker"))
        when_busy(pid, 0.3)
        sig = signal.SIGKILL if kind == "engine_kill" else signal.SIGSTOP
    elif kind in ("rank_kill", "rank_stop"):
        time.sleep(rng.uniform(0.0, 3.0))
        pid = rng.choice(pids("ray::TrainerRank"))
        sig = signal.SIGKILL if kind == "rank_kill" else signal.SIGSTOP
    elif kind == "reward_kill":
        pid = rng.choice(pids("rewards._worker"))
        when_busy(pid, 0.02)
        sig = signal.SIGKILL
    else:
        time.sleep(rng.uniform(0.0, 2.0))
        if kind == "checkpoint_truncate":
            fault.target = truncate_newest(run.run_dir)
        pid, sig = run.driver(), signal.SIGKILL
    os.kill(pid, sig)
    fault.injected_s = run.now()
    fault.target = fault.target or f"pid {pid}"


def truncate_newest(run_dir: Path) -> str:
    """Cuts the newest complete checkpoint's largest file to half its size; returns its path."""
    from rl.trainer.checkpoint import complete_checkpoints

    newest = complete_checkpoints(run_dir)[-1]
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != "manifest.json"), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    return str(victim.relative_to(run_dir))


STEP_LINE = re.compile(r"^step +\d+/\d+ ")  # the console's line for each step logged


def first_line(run: Run, pattern: re.Pattern, after_s: float, limit_s: float) -> tuple[float, str] | None:
    end = time.time() + limit_s
    while time.time() < end:
        found = next(((t, x) for t, x in list(run.lines) if t >= after_s and pattern.search(x)), None)
        if found is not None or run.proc.poll() is not None:
            return found
        time.sleep(0.2)
    return None


def detect(run: Run, fault: Fault, limit_s: float) -> None:
    """The first line after the injection that says the run saw the fault, and the next step logged after it."""
    seen = first_line(run, re.compile(HOW[fault.kind][1]), fault.injected_s - 0.5, limit_s)
    if seen is None:
        return
    fault.detected_s, fault.log_line = seen[0], seen[1][:200]
    done = first_line(run, STEP_LINE, fault.detected_s, limit_s)
    if done is not None:
        fault.recovered_s = done[0]


def chaos(config: str, overrides: list[str], out: Path, faults: list[Fault], seed: int) -> Run:
    run = start(config, overrides + ["run.supervise=true"], out / "chaos", out / "chaos.log")
    rng = random.Random(seed + 1)
    for fault in faults:
        if not wait_for_step(run, fault.after_step):
            break
        inject(run, fault, rng)
        print(f"  fault: {fault.kind:20s} after step {fault.after_step:2d} at {fault.injected_s:6.1f} s ({fault.target})",
              flush=True)
        detect(run, fault, DEADLINE_S + SLACK_S + 600)
        print(f"         detected after {fault.detected_s - fault.injected_s:5.1f} s: {fault.log_line[:120]}", flush=True)
    run.proc.wait()
    return run


def ledger(run_dir: Path) -> list:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["data/indices"] for r in rows if "data/indices" in r]


def report(faults: list[Fault], calm: Path, chaotic: Path, supervisor_rc: int) -> dict:
    """The faults with their detection and recovery, and the checks against the undisturbed run."""
    rows = []
    for f in faults:
        how, _, recovery, knob = HOW[f.kind]
        detect_s = f.detected_s - f.injected_s if f.detected_s >= 0 else None
        bound = (DEADLINE_S if knob else 0.0) + SLACK_S
        rows.append({**asdict(f), "detected_by": how, "recovered_by": recovery, "deadline_knob": knob,
                     "detect_s": detect_s, "recover_s": f.recovered_s - f.detected_s if f.recovered_s >= 0 else None,
                     "bound_s": bound, "in_time": detect_s is not None and detect_s <= bound})
    a, b = (json.loads((d / "summary.json").read_text()) for d in (calm, chaotic))
    same_ledger = ledger(calm) == ledger(chaotic)
    gap = abs(a["final_accuracy"] - b["final_accuracy"])
    return {"faults": rows, "kinds": sorted({f.kind for f in faults}), "ledger_equal": same_ledger,
            "steps": len(ledger(chaotic)), "accuracy": {"undisturbed": a["final_accuracy"], "chaos": b["final_accuracy"]},
            "accuracy_gap": gap, "supervisor": b.get("supervisor"), "supervisor_exit": supervisor_rc,
            "passed": supervisor_rc == 0 and same_ledger and gap <= 0.02 and all(r["in_time"] for r in rows)
            and len(rows) >= 8 and set(KINDS) <= {f.kind for f in faults}}


def show(rep: dict) -> None:
    print(f"\n{'fault':20s} {'step':>4s} {'detected':>9s} {'bound':>6s} {'recovered':>9s}  what recovered it")
    for r in rep["faults"]:
        d = f"{r['detect_s']:.1f} s" if r["detect_s"] is not None else "never"
        rec = f"{r['recover_s']:.1f} s" if r["recover_s"] is not None else "-"
        print(f"{r['kind']:20s} {r['after_step'] + 1:4d} {d:>9s} {r['bound_s']:5.0f}s {rec:>9s}  {r['recovered_by']}")
    acc = rep["accuracy"]
    print(f"\nledger equal to the undisturbed run's: {rep['ledger_equal']} ({rep['steps']} steps)")
    print(f"held-out accuracy: undisturbed {acc['undisturbed']:.3f}, chaos {acc['chaos']:.3f} "
          f"(gap {rep['accuracy_gap']:.3f}, bound 0.02)")
    print(f"supervisor: {rep['supervisor']}")
    print("PASSED" if rep["passed"] else "FAILED")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    p.add_argument("--save-every", type=int, default=4)
    p.add_argument("--out", default="runs/chaos")
    p.add_argument("--reuse-undisturbed", action="store_true", help="keep a finished undisturbed run in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    overrides = ["trainer.ranks=2", f"trainer.steps={args.steps}", f"run.save_every={args.save_every}",
                 f"trainer.call_timeout_s={DEADLINE_S}", f"rollout.call_timeout_s={DEADLINE_S}", "run.max_restarts=6",
                 "rollout.max_engine_restarts=6"]
    calm = out / "undisturbed"
    if not (args.reuse_undisturbed and (calm / "summary.json").exists()):
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.mkdir(parents=True)
        print(f"chaos: the undisturbed run ({args.steps} steps, 2 trainer ranks) in {calm}", flush=True)
        quiet = start(args.config, overrides, calm, out / "undisturbed.log")
        if quiet.proc.wait() != 0:
            print(f"chaos: the undisturbed run failed; see {out / 'undisturbed.log'}")
            return 1
    subprocess.run(["rm", "-rf", str(out / "chaos")], check=True)
    faults = schedule(args.seed, args.steps, args.save_every)
    print(f"chaos: {len(faults)} faults over the same run, supervised, in {out / 'chaos'}", flush=True)
    run = chaos(args.config, overrides, out, faults, args.seed)
    rep = report(faults, calm, out / "chaos", run.proc.returncode)
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    show(rep)
    return 0 if rep["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
