"""The chunked head (rl/trainer/chunked.py) against the materialized logits it replaces: logprobs, entropy and the
gradients of hidden states and output weight agree within 1e-5 in fp32 (temperature, tied embeddings, packing,
2-rank FSDP over gloo, an entropy-bonus loss), and a wrong temperature or a dropped entropy gradient is caught."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rl.trainer.chunked import chunked_logprobs
from rl.trainer.forward import Scoring, token_logprobs

TOL = 1e-5


def reference(hidden, weight, targets, temperature):
    """The materialized oracle: the whole (N, V) log-softmax."""
    logp = torch.log_softmax(hidden @ weight.T / temperature, dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def head_gaps(temperature=0.7, oracle_temperature=0.7, entropy="grad", chunk=5, dtype=torch.float32):
    """Largest differences (logps, entropy, d hidden, d weight) between the chunked head and the oracle under a loss
    that weighs both outputs, on 23 random tokens over a 97-entry vocabulary."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 16, generator=g, dtype=dtype)
    weight = 0.1 * torch.randn(97, 16, generator=g, dtype=dtype)  # logits of a few units, as a trained head gives
    targets = torch.randint(0, 97, (23,), generator=g)
    a, b = torch.randn(23, generator=g, dtype=dtype), torch.randn(23, generator=g, dtype=dtype)

    def run(fn, t, with_entropy_grad):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        logps, ent = fn(h, w, t)
        ((logps * a).sum() + ((ent * b).sum() if with_entropy_grad else 0)).backward()
        return logps.detach(), ent.detach(), h.grad, w.grad

    want = run(lambda h, w, t: reference(h, w, targets, t), oracle_temperature, True)
    got = run(lambda h, w, t: chunked_logprobs(h, w, targets, t, chunk, entropy), temperature, entropy == "grad")
    return [float((x - y).abs().max()) for x, y in zip(got, want)]


def test_head_equals_materialized_in_fp32():
    assert max(head_gaps()) <= TOL


def test_head_is_exact_in_fp64_and_chunk_size_free():
    for chunk in (1, 4, 23, 1000):
        assert max(head_gaps(chunk=chunk, dtype=torch.float64)) < 1e-12


def test_a_wrong_temperature_is_caught():
    assert min(head_gaps(temperature=1.0, oracle_temperature=0.7)[:2]) > 1e-3


def test_a_dropped_entropy_gradient_is_caught():
    logps, ent, d_hidden, d_weight = head_gaps(entropy="value")  # the oracle's loss uses the entropy's gradient
    assert logps <= TOL and ent <= TOL  # the values still agree
    assert d_hidden > 1e-3 and d_weight > 1e-3


def test_no_entropy_work_when_none_is_asked():
    h, w = torch.randn(4, 8), torch.randn(11, 8)
    logps, ent = chunked_logprobs(h, w, torch.tensor([0, 3, 5, 10]), entropy="none")
    assert ent is None and logps.shape == (4,)
    assert chunked_logprobs(h[:0], w, torch.tensor([], dtype=torch.long))[0].shape == (0,)  # an empty micro-batch


def tiny_model(tied: bool = False, seed: int = 0):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=211, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
                         num_experts_per_tok=2, tie_word_embeddings=tied)
    return Qwen3MoeForCausalLM(cfg)


def ragged_batch(rows=6, width=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([20, 7, 13, 4, 17, 9][:rows])
    mask = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.randint(0, 211, (rows, width), generator=g) * mask
    score = mask[:, 1:].bool() & (torch.arange(width - 1) >= 2)  # responses start after a 3-token prompt
    weights = torch.randn(rows, width - 1, generator=g)
    return ids, mask, score, weights


def model_gaps(model, pack=False, entropy_grad=True, temperature=0.7, chunk=3):
    """Largest differences between chunked and materialized forwards of `model` (logps, entropy, every parameter's
    gradient) under a loss of logprobs and entropy."""
    ids, mask, score, weights = ragged_batch()

    def run(chunk_tokens):
        model.zero_grad()
        scoring = Scoring(temperature, pack, chunk_tokens, "grad" if entropy_grad else "value")
        f = token_logprobs(model, ids, mask, scoring, score_mask=score)
        loss = (f.logps * weights).sum() + ((f.entropy * weights.flip(0)).sum() if entropy_grad else 0)
        loss.backward()
        return f, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (want, want_grads), (got, got_grads) = run(0), run(chunk)
    assert want_grads.keys() == got_grads.keys()
    assert got.logps[~score].abs().sum() == 0  # unscored targets are 0, as in the oracle
    grads = max(float((got_grads[k] - want_grads[k]).abs().max()) for k in want_grads)
    return float((got.logps - want.logps).detach().abs().max()), float((got.entropy - want.entropy).detach().abs().max()), grads


@pytest.mark.parametrize("pack", [False, True])
def test_model_forward_equals_materialized(pack):
    assert max(model_gaps(tiny_model(), pack=pack)) <= TOL


def test_tied_embeddings_get_both_gradients():
    model = tiny_model(tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert max(model_gaps(model)) <= TOL


def test_entropy_bonus_gradient_reaches_the_model():
    model = tiny_model()
    assert max(model_gaps(model, entropy_grad=True)) <= TOL
    ids, mask, score, _ = ragged_batch()
    f = token_logprobs(model, ids, mask, Scoring(chunk_tokens=3, entropy="value"), score_mask=score)
    assert not f.entropy.requires_grad and f.logps.requires_grad  # a metric only: no entropy gradient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: the same model sharded by FSDP2, each rank its half of the batch, the chunked and the
    materialized forward + backward; rank 0 saves both sides' outputs and the gathered gradients."""
    import torch.distributed as dist

    from rl.trainer.dist import shard_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = tiny_model()
    shard_model(model)
    ids, mask, score, weights = ragged_batch()
    rows = slice(0, 3) if rank == 0 else slice(3, 6)
    saved = {}
    for chunk in (0, 3):
        model.zero_grad()
        f = token_logprobs(model, ids[rows], mask[rows], Scoring(0.7, chunk_tokens=chunk, entropy="grad"),
                           score_mask=score[rows])
        ((f.logps * weights[rows]).sum() + (f.entropy * weights[rows].flip(1)).sum()).backward()
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}  # a collective: both ranks
        saved[chunk] = (f.logps.detach(), f.entropy.detach(), grads)
    if rank == 0:
        torch.save(saved, out)
    dist.destroy_process_group()


def test_two_rank_fsdp_gathers_the_head_and_matches(tmp_path):
    out = str(tmp_path / "fsdp.pt")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_fsdp_rank, args=(_free_port(), out), nprocs=2, join=True)
    saved = torch.load(out)
    (lp0, ent0, g0), (lp1, ent1, g1) = saved[0], saved[3]
    assert float((lp0 - lp1).abs().max()) <= TOL and float((ent0 - ent1).abs().max()) <= TOL
    assert float(g1["lm_head.weight"].abs().max()) > 1e-3  # the head's gradient reached its shards
    for name in g0:
        assert float((g0[name] - g1[name]).abs().max()) <= TOL, name


def test_bf16_autocast_agrees_with_the_materialized_head_at_bf16_precision():
    """Under bf16 autocast both heads round the logits' matmul to bf16; the chunked one keeps the weight's gradient
    in fp32 across chunks. They agree to bf16's precision (the fp32 comparison above is the exact one)."""
    model = tiny_model()
    ids, mask, score, weights = ragged_batch()

    def run(chunk_tokens):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = token_logprobs(model, ids, mask, Scoring(0.7, chunk_tokens=chunk_tokens, entropy="grad"), score_mask=score)
        ((f.logps * weights).sum() + (f.entropy * weights).sum()).backward()
        return f, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (want, g_want), (got, g_got) = run(0), run(4)
    assert got.logps.dtype == torch.float32 and model.lm_head.weight.grad.dtype == torch.float32
    assert float((got.logps - want.logps).detach().abs().max()) < 0.05
    assert float((got.entropy - want.entropy).detach().abs().max()) < 0.05
    assert float(torch.nn.functional.cosine_similarity(g_got, g_want, dim=0)) > 0.999
