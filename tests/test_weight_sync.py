"""Packing weights for the trip through Ray: one buffer per dtype, unpacked to the same names, values and shapes."""

import torch

from rollout.weight_sync import pack_tensors, unpack_tensors


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
