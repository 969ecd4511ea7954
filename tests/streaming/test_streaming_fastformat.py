"""The fast W4A8_DYNAMIC format builders equal dsq.checkpoint's own, tensor for tensor."""

from __future__ import annotations

import pytest
import torch

import dsq
from dsq.checkpoint import compressed_tensors as ct
from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.bits import unpack_words
from dsq.checkpoint.entries import QuantEntry
from dsq.streaming.fastformat import ascend_two_level_tensors, codes_of, ct_two_level_entry, unpack_int4

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


def _two_level_weight(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[:, : k // 3] *= 40.0  # level-2 scales across 1..17
    w[1] = 0.0
    w[2, :4] = torch.tensor([0.5, -0.25, 0.125, -1e-30])
    w[3] = torch.linspace(-1, 1, k)  # exact half-way quotients
    return w


@pytest.mark.parametrize("n,k,group,chunk_rows", [(384, 256, 128, 128), (136, 200, 64, 128), (10, 77, 32, 10)])
@pytest.mark.parametrize("scale_dtype", ["float32", "bfloat16"])
def test_engine_two_level_codes_are_the_packed_weight_unpacked(n, k, group, chunk_rows, scale_dtype):
    """The CPU engine's direct codes (written chunk by chunk, never packed) equal the reference's packed weight."""
    from dsq.checkpoint.bits import pack_words
    from dsq.streaming.engine import TorchCpuEngine

    scheme = dsq.get_scheme("W4A8_DYNAMIC", group_size=group, scale_dtype=scale_dtype)
    w = _two_level_weight(n, k, 4).to(torch.bfloat16)
    ref = REF.quantize_weight(w, scheme)
    codes = TorchCpuEngine(chunk_elems=chunk_rows * k).two_level_codes(w, None, scheme, "m")
    assert codes.q4.dtype == torch.int8 and codes.shape == (n, k)
    assert torch.equal(pack_words(codes.q4, 4), ref["weight_packed"])
    assert torch.equal(codes.s1, ref["weight_scale"]) and codes.s1.dtype == ref["weight_scale"].dtype
    assert torch.equal(codes.s2, ref["weight_group_scale"])


def test_engine_two_level_codes_from_fp8_equal_the_quantize_path():
    """From a DeepSeek float8 weight with block scales (short edge blocks), several chunks."""
    from dsq.streaming.engine import TorchCpuEngine

    g = torch.Generator().manual_seed(9)
    q = (torch.randn(300, 384, generator=g) * 60).to(torch.float8_e4m3fn)
    s = torch.rand(3, 3, generator=g) * 1e-3 + 1e-4
    scheme = dsq.get_scheme("W4A8_DYNAMIC", scale_dtype="bfloat16")
    eng = TorchCpuEngine(chunk_elems=128 * 384)
    a = eng.two_level_codes(q, s, scheme, "m")
    b = codes_of(eng.quantize(q, s, scheme, "m"), scheme.group_size)
    for x, y in ((a.q4, b.q4), (a.s1, b.s1), (a.s2, b.s2)):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("name,n,k,group,spread", CASES)
def test_format_builders_from_codes_equal_the_package(name, n, k, group, spread):
    """Both formats' two-level builders, fed the engine's codes, write what dsq.checkpoint writes."""
    from dsq.streaming.formats import get_format

    e = _entry(name, n, k, group, 5, "bfloat16", spread)
    codes = codes_of(e.packed, group)
    t, _, stored = get_format("compressed-tensors", "bfloat16").two_level_tensors(name, e.scheme, codes)
    want = ct.storable_entry(e)
    assert stored == want.scheme
    _same(t, {k_: v for k_, v in ct.entry_tensors(want).items()})
    if k % 16 == 0:
        t, types, _ = get_format("ascend", "bfloat16").two_level_tensors(name, e.scheme, codes)
        want_t, want_types = ms.entry_tensors(e, torch.bfloat16)
        _same(t, want_t)
        assert types == want_types
