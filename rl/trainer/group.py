"""trainer.ranks > 1: the trainer as N Ray actors in one torch.distributed group.

The trainer computes on CPU today (the policy is not moved to a GPU), so the group uses gloo; the collectives in
rl.dist are the ones NCCL runs too, but the GPU path (device placement, NCCL) is not built or tested.

Each actor holds an `rl.trainer.rank.Trainer`; the group fans the loop's calls out and gathers the answers. Rows of a
batch are split over the ranks by tokens (rl.trainer.micro) for every forward pass.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from rl.batch.types import TrainBatch
from rl.config import Config
from rl.trainer.micro import plan_ranks
from rl.trainer.update import UpdateResult, micro_batching
from rollout.logfile import log_to_file

COLLECTIVE_GRACE_S = 60.0  # the process group's timeout is the driver's deadline plus this: the driver acts first


StateCopy = dict[str, bytes]  # the trainer's state as `Trainer.save` writes it: each file's bytes by its name


def read_folder(folder: Path) -> StateCopy:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_folder(files: StateCopy, folder: Path) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@ray.remote
class TrainerRank:
    def __init__(self, cfg: Config, policy: str | StateCopy, reference_path: str, threads: int):
        """`policy`: a folder (model.path, a checkpoint), or a state copy (`TrainerGroup.snapshot`), which is
        written into a folder on this rank's node to be loaded, then removed by `restore`."""
        self.unpacked = write_folder(policy, Path(tempfile.mkdtemp(prefix="purerl-state-"))) if isinstance(
            policy, dict) else None
        self.args, self.threads, self.rank = (cfg, str(self.unpacked or policy), reference_path), threads, 0
        self.trainer = None

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port, for the rendezvous (asked of rank 0)."""
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, rank: int, world_size: int, addr: str, port: int, timeout_s: float) -> str:
        import torch.distributed as dist

        from rl.trainer.rank import Trainer

        log_to_file(f"trainer-rank{rank}")  # a quiet run keeps this rank's output in the run's logs/
        torch.set_num_threads(self.threads)
        dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
        self.rank = rank
        self.trainer = Trainer(*self.args)
        return ray.get_runtime_context().get_node_id()

    def call(self, method: str, *args, **kwargs):
        if method in ("save", "load_state"):
            kwargs["rank"] = self.rank
        return getattr(self.trainer, method)(*args, **kwargs)

    def snapshot(self) -> StateCopy:
        """This rank's part of the trainer state (`Trainer.save`: rank 0 the weights, optimizer and schedule,
        every rank its RNG), as bytes for the driver to keep."""
        with tempfile.TemporaryDirectory(prefix="purerl-state-") as tmp:
            self.trainer.save(Path(tmp), rank=self.rank)
            return read_folder(Path(tmp))

    def restore(self) -> None:
        """The optimizer, schedule and RNG of the state copy this rank was built from."""
        self.trainer.load_state(self.unpacked, rank=self.rank)
        shutil.rmtree(self.unpacked, ignore_errors=True)


class TrainerLost(RuntimeError):
    """A trainer rank died, or did not answer a call within trainer.call_timeout_s; `kind` is "died" or "hung"."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class TrainerGroup:
    def __init__(self, cfg: Config, policy_path: str, reference_path: str, options: list[dict]):
        """`options`: Ray actor options per rank (resources, placement bundle)."""
        self.cfg, self.options, self.reference_path = cfg, options, reference_path
        self.timeout = cfg.trainer.call_timeout_s
        self.sharded = cfg.trainer.sharding == "fsdp"  # every policy forward is a collective over the ranks
        self._start(policy_path)
        self._weight_bytes = self._first("weight_bytes")

    def _start(self, policy_path: str | ray.ObjectRef) -> None:
        """The rank actors in their placement bundles (started within cluster.timeout_s), joined in one process
        group whose collectives time out after the driver's deadline (trainer.call_timeout_s) has fired."""
        threads = self.cfg.trainer.threads or max(1, int(self.cfg.trainer.rank_cpus))
        self.ranks = [TrainerRank.options(**o).remote(self.cfg, policy_path, self.reference_path, threads)
                      for o in self.options]
        self.node_ids = ["?"] * len(self.ranks)
        start_s = self.cfg.cluster.timeout_s
        addr, port = self._get([self.ranks[0].address.remote()], "address", start_s)[0]
        self.node_ids = self._get([r.setup.remote(i, len(self.ranks), addr, port, self.timeout + COLLECTIVE_GRACE_S)
                                   for i, r in enumerate(self.ranks)], "setup", start_s)

    def snapshot(self) -> StateCopy:
        """The trainer state as the ranks would save it, held in this process's memory: a copy on the driver's
        node, whichever node the ranks are on, to build the group again from."""
        parts = self._get([r.snapshot.remote() for r in self.ranks], "snapshot")
        return {name: data for part in parts for name, data in part.items()}

    def restart(self, state: StateCopy) -> None:
        """Tears every rank down (a hung one included) and builds the group again in the same placement bundles
        (Ray moves a bundle whose node is gone: ranks that die while it does are started again, within
        cluster.timeout_s), from `state` (`snapshot`), put once in this node's object store for every rank to
        fetch."""
        ref, deadline = ray.put(state), time.monotonic() + self.cfg.cluster.timeout_s
        while True:
            self.shutdown()
            try:
                self._start(ref)
                self._get([r.restore.remote() for r in self.ranks], "restore")
                return
            except TrainerLost:  # a bundle on a lost node is placed again once Ray has marked the node dead
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _get(self, refs: list, call: str, timeout_s: float | None = None) -> list:
        """ray.get of one call per rank (refs[i] is rank i's, or the first ranks'), within trainer.call_timeout_s
        (or `timeout_s`): TrainerLost naming the rank, its node and the call as soon as one dies, or when the
        deadline passes."""
        timeout_s = timeout_s or self.timeout
        deadline, rank_of = time.monotonic() + timeout_s, {ref: i for i, ref in enumerate(refs)}
        pending, got = list(refs), [None] * len(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                i = rank_of[pending[0]]
                knob = "trainer.call_timeout_s" if timeout_s == self.timeout else "cluster.timeout_s"
                raise TrainerLost(f"trainer rank {i} (node {self.node_ids[i]}) did not answer {call} within "
                                  f"{knob}={timeout_s:g} s", "hung")
            try:
                got[rank_of[ready[0]]] = ray.get(ready[0])  # each answer fetched once, as it arrives
            except RayActorError as e:
                raise self._died(rank_of[ready[0]], call, e) from e
            except RayTaskError:  # a survivor's collective broke because a peer died: name the dead one
                dead = self._first_dead(pending, rank_of)
                if dead is None:
                    raise
                raise self._died(rank_of[dead[0]], call, dead[1]) from dead[1]
        return got

    def _died(self, i: int, call: str, e: Exception) -> TrainerLost:
        return TrainerLost(f"trainer rank {i} (node {self.node_ids[i]}) died during {call}: "
                           f"{str(e).strip().splitlines()[0]}", "died")

    @staticmethod
    def _first_dead(pending: list, rank_of: dict, wait_s: float = 10.0):
        """(ref, error) of the first of `pending` whose rank is dead, waiting up to `wait_s` for them; or None."""
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=wait_s) if pending else ([], [])
        for ref in sorted(ready, key=rank_of.get):
            try:
                ray.get(ref)
            except RayActorError as e:
                return ref, e
            except RayTaskError:
                continue
        return None

    def _all(self, method: str, *args, **kwargs) -> list:
        return self._get([r.call.remote(method, *args, **kwargs) for r in self.ranks], method)

    def _first(self, method: str, *args):
        return self._get([self.ranks[0].call.remote(method, *args)], method)[0]

    def top_k(self) -> int | None:
        return self._first("top_k")

    def weight_bytes(self) -> int:
        return self._weight_bytes

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: str = "policy",
                 with_routing: bool = False, score_mask: torch.Tensor | None = None, replay: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each rank scores its rows (balanced by tokens, rl.trainer.micro); the results are put back in row order.
        Under FSDP (policy and reference are both sharded) every rank runs as many micro-batches as the busiest.
        `replay` (B, L, layers, k): the routing the policy's routers take (with_routing), the engine's."""
        plan = plan_ranks(attention_mask.sum(1).tolist(), len(self.ranks), micro_batching(self.cfg))
        parts = [torch.tensor(rows, dtype=torch.long) for rows in plan.rows()]
        passes = plan.passes if self.sharded else 0
        calls = [(r, rows) for r, rows in zip(self.ranks, parts) if len(rows) or self.sharded]
        got = self._get([r.call.remote("logprobs", input_ids[rows], attention_mask[rows], model, with_routing,
                                       None if score_mask is None else score_mask[rows], passes,
                                       None if replay is None else replay[rows]) for r, rows in calls], "logprobs")
        logps = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)
        routing = None
        for (_, rows), (lp, rt) in zip(calls, got):
            logps[rows] = lp
            if with_routing and len(rows):
                routing = routing if routing is not None else rt.new_zeros(input_ids.shape[0], *rt.shape[1:])
                routing[rows] = rt
        return logps, routing

    def update(self, batch: TrainBatch) -> UpdateResult:
        """Every rank returns the same (all-reduced) result but its own peak memory; rank 0's is kept, with the
        peak of the busiest rank."""
        results = self._all("update", ray.put(batch))
        peak = max(r.metrics["trainer/peak_memory_gib"] for r in results)
        first = results[0]
        return UpdateResult(first.metrics | {"trainer/peak_memory_gib": peak}, first.before_logps, first.before_rows)

    def weights(self) -> ray.ObjectRef:
        """Rank 0's packed weights, left in the object store for the engines to fetch from it directly (under
        FSDP every rank takes part in gathering them)."""
        refs = [r.call.remote("packed_weights") for r in (self.ranks if self.sharded else self.ranks[:1])]
        self._get(refs, "packed_weights")
        return refs[0]

    def adapter_config(self) -> dict:
        return self._first("adapter_config")

    def sync_gap(self, groups, pad_id: int) -> dict[str, float]:
        return self._all("sync_gap", groups, pad_id)[0] if self.sharded else self._first("sync_gap", groups, pad_id)

    def save(self, folder: Path, with_state: bool = True, upload: str | None = None) -> None:
        """Every rank writes into `folder`, which must then be on storage the ranks' nodes share, or, for a run in
        object storage, into the folder URI `upload` from its own node."""
        self._all("save", str(folder), with_state=with_state, upload=upload)

    def load_state(self, folder: Path | str) -> None:
        """`folder`: shared storage, or a URI each rank downloads on its own node."""
        self._all("load_state", str(folder))

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
        self.ranks = []


