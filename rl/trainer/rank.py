"""One trainer rank: the policy, the frozen reference, the optimizer and the LR schedule, and what the loop asks of
them. The same class runs in the driver (trainer.ranks=1) and inside each Ray actor of a `TrainerGroup`.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from rl.batch.types import TrainBatch
from rl.config import Config
from rl.errors import ConfigError, UserError
from rl.families import ROUTER_BIAS, top_k_of
from rl.storage import fetch, upload_written
from rl.sync.parity import logprob_gaps
from rl.trainer import lora as lora_tools
from rl.trainer.checkpoint import read_state
from rl.trainer.device import autocast, compute_dtype, trainer_device
from rl.trainer.dist import full_state, load_sharded, world
from rl.trainer.export import checkpoint_tensors
from rl.trainer.forward import batched_logprobs
from rl.trainer.memory import PeakMemory
from rl.trainer.moe import freeze_router, logprobs_and_routing, router_biases
from rl.trainer.optim import make_optimizer
from rl.trainer.policy import empty_policy, load_policy
from rl.trainer.update import UpdateResult, micro_batching, scoring_of, update
from rollout.transport import PackedWeights, pack_tensors
from rollout.types import RolloutGroup

TRAINER_STATE = "trainer_state.pt"


class Trainer:
    def __init__(self, cfg: Config, policy_path: str, reference_path: str):
        """`policy_path`: where the trainable weights start (model.path, or a checkpoint on resume; with LoRA the
        base is always `reference_path`, and a checkpoint holds the adapter)."""
        self.cfg = cfg
        torch.manual_seed(cfg.trainer.seed)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        self.device = trainer_device(cfg)
        self.dtype = compute_dtype(cfg, self.device)  # bf16 under mixed precision, else None
        self.sharded = cfg.trainer.sharding == "fsdp" and world()[1] > 1  # one rank (validated): never sharded
        self.lora = cfg.model.lora.rank > 0
        policy_path = str(fetch(policy_path))  # a remote run's checkpoint on resume: downloaded on this rank's node
        self.policy = self._load(policy_path, trainable=True, base=reference_path)
        # the KL reference: with LoRA, the policy with its adapters off (no second copy)
        self.reference = self._load(reference_path, trainable=False) if cfg.algo.kl_coef > 0 and not self.lora else None
        self._weight_bytes = lora_tools.sync_bytes(self.policy, cfg.rollout.lora_sync == "adapter")
        self.optim = make_optimizer(self.policy, cfg.trainer)
        self.memory = PeakMemory(self.device)  # the peak over a step's passes, read when its update ends

    def _load(self, path: str, trainable: bool, base: str | None = None):
        """The policy or the reference on this rank's device: whole, or (FSDP) read by rank 0 only and sharded;
        with LoRA the base from `base` and adapters on it (those in `path` when it holds an adapter); routers
        frozen and decoder layers checkpointed as the config asks."""
        c = self.cfg
        lora = trainable and self.lora
        args = (base if lora else path, c.model.dtype, trainable, c.model.experts_implementation)
        adapter = path if lora and lora_tools.holds_adapter(path) else None

        def adapted(model):
            s = c.model.lora
            return lora_tools.wrap(model, s.rank, s.alpha, s.dropout, s.target_modules, adapter) if lora else model

        self.weights_from = "disk" if not self.sharded or world()[0] == 0 else "rank 0"
        if self.sharded:
            model = load_sharded(lambda: adapted(load_policy(*args)), lambda: adapted(empty_policy(*args)),
                                 self.device, self.dtype)
        else:
            model = adapted(load_policy(*args)).to(self.device)
        if trainable and c.moe.freeze_router:
            freeze_router(model)
        if trainable and c.moe.bias_update_rate > 0 and not _has_biases(model):
            raise ConfigError(f"needs a policy whose routers have a correction bias (DeepSeek-V3's {ROUTER_BIAS}); "
                              f"{path} has none", "moe.bias_update_rate")
        if trainable and c.trainer.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def top_k(self) -> int | None:
        return top_k_of(self.policy.config)

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: str = "policy",
                 with_routing: bool = False, score_mask: torch.Tensor | None = None,
                 passes: int = 0, replay: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L-1) logprobs of `model` ("policy" or "reference") without gradients at the targets of `score_mask`
        (default: all), and with `with_routing` the policy's routing (B, L, layers, k): its own, or `replay`'s
        (the engine's, which its routers then take). `passes`: run at least this many forwards (FSDP: as many as
        the busiest rank)."""
        batches = micro_batching(self.cfg).batches(attention_mask.sum(1).tolist())
        args = (input_ids, attention_mask, scoring_of(self.cfg), batches, score_mask, passes)
        with self._precision(), self.memory:
            if with_routing:  # recorded on the padded layout
                return logprobs_and_routing(self.policy, args[:2], *args[2:], replay=replay)
            if model == "reference" and self.lora:
                with lora_tools.reference(self.policy):
                    return batched_logprobs(self.policy, *args), None
            net = self.reference if model == "reference" else self.policy
            return batched_logprobs(net, *args), None

    def update(self, batch: TrainBatch) -> UpdateResult:
        """rl.trainer.update.update with the run's settings (this rank's rows of each mini-batch under
        torch.distributed), on this rank's device; the result comes back on the CPU."""
        with self._precision(), self.memory:
            result = update(self.policy, self.optim, batch.to(self.device), self.cfg)
        metrics = result.metrics | {"trainer/peak_memory_gib": self.memory.take_peak_gib()}
        return UpdateResult(metrics, result.before_logps.cpu(), result.before_rows.cpu())

    def _precision(self):
        return autocast(self.device, self.dtype, self.sharded)

    def weight_bytes(self) -> int:
        """Bytes of one copy of the weights the engines receive."""
        return self._weight_bytes

    def weights(self) -> list[tuple[str, torch.Tensor]]:
        """What the engines receive, as (name, tensor) pairs: the policy in checkpoint layout (with LoRA merged in,
        `rollout.lora_sync=merged`), or the adapter's tensors (`adapter`). Sharded: gathered onto rank 0 (every
        rank must call), empty on the others."""
        state = self._sync_state()
        if state is None:
            return []
        if self.lora and self.cfg.rollout.lora_sync == "adapter":
            return [(k, v.to("cpu", copy=False).contiguous()) for k, v in state.items()]
        return checkpoint_tensors(lora_tools.unwrapped(self.policy), state)

    def _sync_state(self) -> dict[str, torch.Tensor] | None:
        """The state `weights` sends, before checkpoint names (None on a rank other than 0 under FSDP)."""
        if self.lora and self.cfg.rollout.lora_sync == "adapter":
            return lora_tools.adapter_state(self.policy, sharded=self.sharded)
        if self.lora:
            return lora_tools.merged_state(self.policy, sharded=self.sharded)
        return full_state(self.policy) if self.sharded else self.policy.state_dict()

    def adapter_config(self) -> dict:
        """The adapter's peft config (rollout.lora_sync=adapter: the engines load it with the tensors)."""
        return lora_tools.adapter_config(self.policy)

    def packed_weights(self) -> PackedWeights:
        """`weights` packed into one buffer per dtype: what a trainer rank puts in the object store."""
        return pack_tensors(self.weights())

    def sync_gap(self, groups: list[RolloutGroup], pad_id: int) -> dict[str, float]:
        """The sync check's figures (rl.sync.parity.logprob_gaps: mean and max) on `groups`."""
        with self._precision():
            return logprob_gaps(self.policy, groups, pad_id, scoring_of(self.cfg), micro_batching(self.cfg))

    def save(self, folder: Path, rank: int = 0, with_state: bool = True, upload: str | None = None) -> None:
        """Rank 0 writes the policy: a Hugging Face folder, or with LoRA the adapter in peft's format (resumable
        checkpoints) or the merged weights with the adapter in `adapter/` (the final policy). `with_state`, also
        the optimizer and LR schedule (whole: gathered from the shards under FSDP, so every rank must call), and
        every rank its RNG states. `upload` (a folder URI of a remote run): written on this rank's node and
        uploaded there instead, `folder` left alone."""
        if upload:
            return upload_written(lambda tmp: self.save(tmp, rank, with_state), upload)
        folder = Path(folder)
        if self.lora:
            lora_tools.save(self.policy, folder, merged=not with_state, write=rank == 0, sharded=self.sharded)
        else:
            weights = full_state(self.policy) if self.sharded else None
            if rank == 0:
                self.policy.save_pretrained(folder, safe_serialization=True, state_dict=weights)
        if not with_state:
            return
        optimizer = self._optimizer_state()
        if rank == 0:
            torch.save({"optimizer": optimizer, "scheduler": self.optim.scheduler.state_dict(),
                        "sharding": self._sharding()}, folder / TRAINER_STATE)
        torch.save({"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}, folder / f"rng_rank{rank}.pt")

    def _sharding(self) -> str:
        """How this rank holds the optimizer state: what a checkpoint records, and must match on resume."""
        return "fsdp" if self.sharded else "replicate"

    def _optimizer_state(self) -> dict:
        if not self.sharded:
            return self.optim.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.policy, self.optim.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state(self, folder: Path, rank: int = 0) -> None:
        """Everything `save` wrote but the weights, which the policy was loaded from (a URI: downloaded first)."""
        folder = fetch(str(folder))
        state = read_state(folder / TRAINER_STATE)
        written = state.get("sharding", "replicate")  # checkpoints from before trainer.sharding existed
        if written != self._sharding():
            raise UserError(f"{folder / TRAINER_STATE} holds optimizer state written with trainer.sharding={written} "
                             f"(and trainer.ranks > 1 for fsdp); resume with the same settings")
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.policy, self.optim.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optim.optimizer.load_state_dict(state["optimizer"])
        self.optim.scheduler.load_state_dict(state["scheduler"])
        rng = folder / f"rng_rank{rank}.pt"
        if rng.is_file():  # absent when the run that wrote it had fewer ranks
            r = read_state(rng)
            torch.set_rng_state(r["torch_rng"])
            random.setstate(r["python_rng"])


def _has_biases(model) -> bool:
    """True when every MoE layer's router has a correction bias (and there is at least one)."""
    biases = router_biases(model)
    return bool(biases) and all(b is not None for b in biases)
