"""rl/packing.py: right-padded rows laid end to end, and the trainer's forward on them equal to the padded one."""

import pytest
import torch

from rl.trainer.forward import Scoring, token_logprobs
from rl.trainer.packing import plan
from rl.trainer.policy import load_policy


def _mask(lengths, width):
    return (torch.arange(width) < torch.tensor(lengths)[:, None]).long()


def test_plan_places_longest_first_by_hand():
    p = plan(_mask([3, 1, 2], 4))
    # width 3 (the longest); row 0: sequence 0; row 1: sequence 2 at 0, then sequence 1 at 2
    assert (p.rows, p.width) == (2, 3)
    assert p.slot.view(3, 4).tolist() == [[0, 1, 2, -1], [5, -1, -1, -1], [3, 4, -1, -1]]
    assert p.source.tolist() == [0, 1, 2, 8, 9, 4]  # flat padded index b * 4 + t
    assert p.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]


def test_pack_then_unpack_restores_every_token_and_zeroes_padding():
    mask = _mask([5, 2, 4, 1, 3], 6)
    x = torch.arange(1, 31).view(5, 6) * mask
    p = plan(mask)
    packed = p.pack(x, fill=-7)
    assert p.rows == 3 and packed.shape == (3, 5)
    assert sorted(packed[packed > 0].tolist()) == sorted(x[x > 0].tolist())
    assert (packed == -7).sum() == 15 - 15  # 5 + 2 + 4 + 1 + 3 tokens fill the 3 x 5 slots exactly
    assert torch.equal(p.unpack(packed, 5), x)


def test_no_plan_for_left_padding_or_when_no_row_is_saved():
    assert plan(torch.tensor([[0, 1, 1], [1, 1, 1]])) is None  # not right-padded
    assert plan(_mask([3, 3], 3)) is None  # nothing to pack


@pytest.mark.parametrize("with_router", [False, True])
def test_packed_forward_equals_padded_values_and_gradients(with_router):
    model = load_policy("models/tiny-moe-base", "float32")
    g = torch.Generator().manual_seed(0)
    lengths = [30, 7, 12, 25, 9, 18, 4, 21]
    mask = _mask(lengths, 32)
    ids = torch.randint(3, 400, (8, 32), generator=g) * mask
    assert plan(mask).rows < 8

    def run(pack):
        model.zero_grad()
        f = token_logprobs(model, ids, mask, Scoring(0.7, pack=pack, entropy="value"), with_router=with_router)
        weights = torch.linspace(-1, 1, f.logps.numel()).view_as(f.logps) * mask[:, 1:]
        loss = (f.logps * weights).sum() + (f.aux_loss if with_router else 0)
        loss.backward()
        return f, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (padded, grads_padded), (packed, grads_packed) = run(False), run(True)
    target = mask[:, 1:].bool()
    torch.testing.assert_close(packed.logps[target], padded.logps[target], rtol=0, atol=1e-4)
    torch.testing.assert_close(packed.entropy[target], padded.entropy[target], rtol=0, atol=1e-4)
    assert packed.logps[~target].abs().sum() == 0
    if with_router:
        keep = mask.reshape(-1).bool()
        for a, b in zip(packed.router_logits, padded.router_logits, strict=True):
            torch.testing.assert_close(a[keep], b[keep], rtol=0, atol=1e-4)
        torch.testing.assert_close(packed.aux_loss, padded.aux_loss, rtol=1e-5, atol=1e-6)
    assert len(grads_packed) == len(grads_padded)
    for a, b in zip(grads_packed, grads_padded, strict=True):  # float noise only: tiny against each tensor's scale
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
