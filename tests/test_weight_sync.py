"""The `purerl` weight-transfer backend: packing weights for the trip through Ray (one buffer per dtype, unpacked
to the same names, values and shapes), /dev/shm, and the engine's direct load checked against vLLM's loader."""

import pytest
import torch

from rollout.transport import pack_tensors, unpack_tensors


def test_pack_roundtrip_mixed_dtypes_keeps_order_and_values():
    items = [("a", torch.arange(6.0).view(2, 3)), ("b", torch.tensor([1.5, 2.5], dtype=torch.bfloat16)),
             ("c", torch.ones(4, 1, 2)), ("d", torch.tensor(7.0))]
    packed = pack_tensors(items)
    assert sorted(packed.buffers) == ["bfloat16", "float32"]
    assert packed.buffers["float32"].nbytes == (6 + 8 + 1) * 4 and packed.buffers["bfloat16"].nbytes == 2 * 2
    out = unpack_tensors(packed)
    assert [n for n, _ in out] == ["a", "b", "c", "d"]
    for (_, x), (_, y) in zip(items, out):
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def test_shared_memory_roundtrip_grows_and_cleans_up(tmp_path):
    from rollout.shared_memory import ALIGN, PREFIX, SharedWeights, has_room, open_shared, remove_stale

    items = [("a", torch.arange(6.0).view(2, 3)), ("b", torch.tensor([1.5, 2.5, 3.5], dtype=torch.bfloat16))]
    shared = SharedWeights(tmp_path)
    packed, handle = shared.pack(items)  # packed straight into the file
    assert handle.regions == {"float32": (0, 24), "bfloat16": (ALIGN, 6)}  # each dtype on its own cache line
    assert shared.path.read_bytes()[:24] == torch.arange(6.0).numpy().tobytes()
    for (n, x), (m, y), (_, z) in zip(items, unpack_tensors(open_shared(handle)), unpack_tensors(packed)):
        assert n == m and x.dtype == y.dtype and torch.equal(x, y) and torch.equal(x, z)
    bigger = [("a", torch.arange(100.0)), ("b", torch.ones(3, dtype=torch.bfloat16))]
    handle = shared.write(pack_tensors(bigger))  # the file grows; the engine side maps it again
    assert shared.size == 512 and torch.equal(dict(unpack_tensors(open_shared(handle)))["a"], torch.arange(100.0))
    shared.close()
    assert not shared.path.exists()

    dead = tmp_path / f"{PREFIX}999999999-abcd"  # nobody holds its lock: a killed driver's file
    dead.write_bytes(b"x")
    alive = SharedWeights(tmp_path)
    alive.write(pack_tensors(items))
    remove_stale(tmp_path)
    assert not dead.exists() and alive.path.exists()
    assert has_room(1 << 20, tmp_path) and not has_room(1 << 60, tmp_path)
    # reserving allocates every page now (a later write cannot SIGBUS); an impossible size is refused
    assert alive.reserve(1 << 20) and alive.path.stat().st_blocks * 512 >= 1 << 20 and not alive.reserve(1 << 60)
    alive.close()
    assert not alive.path.exists()


def sync(worker, packed, version: int) -> str:
    """One sync through vLLM's lifecycle on a RolloutWorker; returns the load path the backend took."""
    import ray

    ray.get(worker.start_weight_update.remote())
    ray.get(worker.update_weights.remote({}, packed))
    held, _ = ray.get(worker.finish_weight_update.remote(version))
    assert held == version
    return ray.get(worker.transfer_report.remote())["last"]["path"]


@pytest.mark.engines
def test_engine_loads_directly_and_exactly():
    """The direct load (after vLLM's own first load) leaves every engine parameter and every packed layer's
    output bit-identical to vLLM's reload of the same weights, and keeps parity. A wrong map is caught by the
    proof: a wrong q/k/v order leaves only the experts' map, a wrong expert order leaves vLLM's loader. Every
    sync goes through vLLM's lifecycle, and a sync whose tensors differ from the first is refused."""
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.sync.parity import max_logprob_gap
    from rl.trainer.export import checkpoint_tensors
    from rl.trainer.forward import Scoring
    from rollout.types import EngineSpec, Sampling
    from rollout.worker import RolloutWorker

    path = "models/tiny-moe-base"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    gen = torch.Generator().manual_seed(0)

    def perturbed():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        return pack_tensors(checkpoint_tensors(model))

    def state(w):
        from rollout.vllm_ext.direct_load import fingerprint

        return fingerprint(w.weight_transfer_engine.loader.plan)

    def reload_slowly(w, packed):
        from rollout.vllm_ext.direct_load import repack_moe
        from rollout.vllm_ext.reload import vllm_reload

        vllm_reload(w.vllm_config, w.model_runner.model, unpack_tensors(packed))
        repack_moe(w.model_runner.model)

    def plan_state(w):
        return w.weight_transfer_engine.loader.kind()

    def swap_k_and_v(w):
        w.model_runner.model.packed_modules_mapping = {"qkv_proj": ["q_proj", "v_proj", "k_proj"]}
        w.weight_transfer_engine.loader.plan = None  # learn again, with the wrong map

    def swap_gate_and_up(w):
        import rollout.vllm_ext.direct_load as dl

        dl._SHARD.update(gate_proj="w3", up_proj="w1")
        w.weight_transfer_engine.loader.plan = None

    def gap(worker):
        prompts = [tok("Q: 12+7=? A:")["input_ids"], tok("Q: 3*4=? A:")["input_ids"]]
        sampling = Sampling(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=1)
        return max_logprob_gap(model, ray.get(worker.generate.remote(prompts, [0, 1], sampling)), tok.pad_token_id, Scoring())

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        worker = RolloutWorker.remote(EngineSpec(path, max_model_len=256, threads=1), 0)
        ray.get(worker.init_weight_transfer_engine.remote({}))
        assert sync(worker, perturbed(), 1) == "reload"  # vLLM's loader; the map is learned and proven
        assert ray.get(worker.run.remote(plan_state)) == "all"
        packed = perturbed()
        assert sync(worker, packed, 2) == "direct"  # no vLLM loader at all
        direct = ray.get(worker.run.remote(state))
        assert gap(worker) < 1e-3
        ray.get(worker.run.remote(reload_slowly, packed))
        slow = ray.get(worker.run.remote(state))
        # 4 layers x (q/k norms, two layer norms, w13, w2, qkv, o, router: their parameters and probe outputs)...
        assert len(direct) == len(slow) > 40
        assert all(torch.equal(a, b) for a, b in zip(direct, slow))
        report = ray.get(worker.transfer_report.remote())
        assert report["calls"] == {"init": 1, "start": 2, "update": 2, "finish": 2}

        ray.get(worker.run.remote(swap_k_and_v))
        assert sync(worker, perturbed(), 3) == "reload"
        assert ray.get(worker.run.remote(plan_state)) == "experts"  # the proof caught the q/k/v order
        assert sync(worker, perturbed(), 4) == "experts"
        assert gap(worker) < 1e-3

        ray.get(worker.run.remote(swap_gate_and_up))
        assert sync(worker, perturbed(), 5) == "reload"
        assert ray.get(worker.run.remote(plan_state)) is False  # the proof caught it; vLLM's loader is kept
        assert sync(worker, perturbed(), 6) == "reload"
        assert gap(worker) < 1e-3

        # a sync without one tensor, or with one reshaped, is refused before anything loads
        short = pack_tensors(checkpoint_tensors(model)[1:])
        ray.get(worker.start_weight_update.remote())
        ray.get(worker.update_weights.remote({}, short))
        with pytest.raises(ray.exceptions.RayTaskError, match="does not match the first sync: missing"):
            ray.get(worker.finish_weight_update.remote(7))
        assert gap(worker) < 1e-3  # the engine still holds version 6's weights
        ray.get(worker.start_weight_update.remote())
        with pytest.raises(ray.exceptions.RayTaskError, match="another dtype or shape, for"):
            ray.get(worker.update_weights.remote({}, pack_tensors([("lm_head.weight", torch.zeros(3, 3))])))
        assert sync(worker, perturbed(), 7) == "reload" and gap(worker) < 1e-3  # and the next sync works
    finally:
        ray.shutdown()
