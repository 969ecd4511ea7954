"""The fast W4A8_DYNAMIC format builders equal dsq.checkpoint's own, tensor for tensor."""

from __future__ import annotations

import pytest
import torch

import dsq
from dsq.checkpoint import compressed_tensors as ct
from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.bits import unpack_words
from dsq.checkpoint.entries import QuantEntry
from dsq.streaming.fastformat import ascend_two_level_tensors, ct_two_level_entry, unpack_int4

REF = dsq.get_backend("cpu-reference")


def _entry(name: str, n: int, k: int, group: int, seed: int, scale_dtype="float32", spread=1.0) -> QuantEntry:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[:, : k // 3] *= spread  # uneven groups give level-2 scales across 1..17
    w[1] = 0.0
    scheme = dsq.get_scheme("W4A8_DYNAMIC", group_size=group, scale_dtype=scale_dtype)
    return QuantEntry(name, scheme, REF.quantize_weight(w, scheme))


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


CASES = [("model.layers.3.mlp.experts.7.gate_proj", 256, 512, 128, 1.0),
         ("model.layers.3.mlp.experts.7.down_proj", 128, 256, 128, 40.0),
         ("x.self_attn.o_proj", 64, 384, 64, 300.0),
         ("x.mlp.up_proj", 32, 200, 64, 1.0)]


@pytest.mark.parametrize("name,n,k,group,spread", CASES)
@pytest.mark.parametrize("scale_dtype", ["float32", "bfloat16"])
def test_ct_two_level_equals_storable_entry(name, n, k, group, spread, scale_dtype):
    e = _entry(name, n, k, group, 1, scale_dtype, spread)
    a, b = ct_two_level_entry(e), ct.storable_entry(e)
    assert a.scheme == b.scheme
    _same(ct.entry_tensors(a), ct.entry_tensors(b))


@pytest.mark.parametrize("name,n,k,group,spread", [c for c in CASES if c[2] % 16 == 0])
def test_ascend_two_level_equals_entry_tensors(name, n, k, group, spread):
    e = _entry(name, n, k, group, 2, "float32", spread)
    s2 = e.packed["weight_group_scale"]
    assert int(s2.max()) > 1 or spread == 1.0
    a = ascend_two_level_tensors(e)
    b = ms.entry_tensors(e, torch.bfloat16)
    _same(a[0], b[0])
    assert a[1] == b[1]


def test_unpack_int4_equals_unpack_words():
    g = torch.Generator().manual_seed(3)
    for k in (8, 77, 256):
        q = torch.randint(-8, 8, (5, k), generator=g).to(torch.int8)
        from dsq.checkpoint.bits import pack_words

        words = pack_words(q, 4)
        assert torch.equal(unpack_int4(words, k), unpack_words(words, 4, k).to(torch.int16))
