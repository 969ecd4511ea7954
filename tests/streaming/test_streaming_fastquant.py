"""The streaming fast path (torch) must give the numpy reference's bits for every data-free scheme."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dsq
from dsq.checkpoint.bits import pack_words
from dsq.errors import QuantInputError
from dsq.streaming.engine import TorchCpuEngine, dequant_fp8, make_engine
from dsq.streaming.fastquant import concat_rows, fast_supported, pack_codes_fast, quantize_rows

SCHEMES = ["W8A16", "W4A16", "W4A16_ASYM", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"]
REF = dsq.get_backend("cpu-reference")


def _same(a: dsq.PackedWeight, b: dsq.PackedWeight) -> None:
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        x, y = a[k], b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, k
        if x.dtype == torch.float8_e4m3fn:
            x, y = x.view(torch.uint8), y.view(torch.uint8)
        assert torch.equal(x, y), k


def _weights(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.05
    w[1] = 0.0  # all-zero channel / groups: scale = tiny, codes 0
    w[2, :5] = torch.tensor([0.5, -0.25, 1e-30, -1e-30, 0.125])  # exact ratios (ties), denormal-range values
    w[3] = torch.linspace(-1, 1, shape[1])  # many exact half-way quotients
    w[4] *= 1e-6  # fp8 subnormal codes after scaling
    return w


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("scale_dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("shape", [(256, 384), (136, 200), (9, 77)])
def test_fast_path_matches_reference(name, scale_dtype, shape):
    for rule in ("half_range", "qmax"):
        scheme = dsq.get_scheme(name).replace(scale_dtype=scale_dtype, scale_rule=rule)
        w = _weights(shape)
        _same(quantize_rows(w, scheme), REF.quantize_weight(w, scheme))


def test_group_size_and_block_variants():
    w = _weights((200, 300), seed=3)
    for scheme in (dsq.get_scheme("W4A16", group_size=32), dsq.get_scheme("W4A8_DYNAMIC", group_size=64),
                   dsq.get_scheme("FP8_BLOCK", block_size=(64, 32)), dsq.get_scheme("W4A16_ASYM", group_size=64)):
        _same(quantize_rows(w, scheme), REF.quantize_weight(w, scheme))


def test_row_chunks_concatenate_to_the_whole_weight():
    """Quantizing 128-row chunks and concatenating equals quantizing the whole weight (row-separability)."""
    w = _weights((300, 256), seed=1)
    for name in SCHEMES:
        scheme = dsq.get_scheme(name)
        parts = [quantize_rows(w[r:r + 128].contiguous(), scheme) for r in range(0, 300, 128)]
        _same(concat_rows(parts), REF.quantize_weight(w, scheme))


def test_engine_chunking_matches_reference():
    w = _weights((384, 256), seed=2)
    eng = TorchCpuEngine(chunk_elems=128 * 256)  # forces 3 chunks
    for name in SCHEMES:
        _same(eng.quantize(w.to(torch.bfloat16), None, dsq.get_scheme(name), "m"),
              REF.quantize_weight(w.to(torch.bfloat16), dsq.get_scheme(name)))


def test_pack_codes_fast_equals_pack_words():
    g = torch.Generator().manual_seed(0)
    for bits, k in ((4, 77), (4, 128), (8, 5), (8, 64)):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
        q = torch.randint(lo, hi, (7, k), generator=g, dtype=torch.int64).to(torch.int8)
        q[0] = lo
        q[1] = hi - 1
        assert torch.equal(pack_codes_fast(q, bits), pack_words(q, bits))


def test_nan_weight_is_refused_with_its_name():
    w = _weights((16, 128))
    w[3, 7] = float("nan")
    with pytest.raises(QuantInputError, match="layers.0.q_proj"):
        quantize_rows(w, dsq.get_scheme("W4A16"), "layers.0.q_proj")
    w[3, 7] = float("inf")
    with pytest.raises(QuantInputError, match="NaN or Inf"):
        quantize_rows(w, dsq.get_scheme("FP8_BLOCK"), "x")


def test_static_schemes_are_not_fast():
    assert not fast_supported(dsq.get_scheme("W8A8"))
    assert all(fast_supported(dsq.get_scheme(n)) for n in SCHEMES)


def test_fp8_dequant_is_the_float32_product_per_block():
    """DeepSeek's weight_scale_inv multiplies each 128x128 block; edge blocks are short."""
    g = torch.Generator().manual_seed(5)
    q = (torch.randn(200, 300, generator=g) * 50).to(torch.float8_e4m3fn)
    s = torch.rand(2, 3, generator=g) + 0.5
    got = dequant_fp8(q, s).numpy()
    qf = q.to(torch.float32).numpy()
    block_scale = s.numpy()[np.arange(200)[:, None] // 128, np.arange(300)[None, :] // 128]
    want = (qf * block_scale).astype(np.float32)  # float32 * float32: one rounding
    assert want.dtype == np.float32 and np.array_equal(got, want)
    even = dequant_fp8(q[:128, :256].contiguous(), s[:1, :2].contiguous())  # the reshape path
    assert torch.equal(even, torch.from_numpy(want[:128, :256]))


def test_reference_engine_is_the_oracle():
    eng = make_engine("cpu-reference")
    w = _weights((64, 128))
    _same(eng.quantize(w, None, dsq.get_scheme("W4A16"), "m"), REF.quantize_weight(w, dsq.get_scheme("W4A16")))


@pytest.mark.parametrize("scale_range", [(1e-4, 1e-2), (1e-40, 1e-37), (1.0, 300.0)])
def test_fast_fp8_dequant_is_bit_identical_for_every_code(scale_range):
    """Every non-NaN e4m3 code (subnormals, -0, 448) times block scales, incl. subnormal float32 products and
    scales large enough to take the plain-conversion path, in a chunk with short edge blocks."""
    from dsq.streaming.fastquant import FastQuantizer

    codes = torch.tensor([b for b in range(256) if b & 0x7F != 0x7F], dtype=torch.uint8)
    g = torch.Generator().manual_seed(7)
    for rows, cols in ((256, 508), (130, 254), (128, 256)):
        idx = torch.randint(0, codes.numel(), (rows, cols), generator=g)
        q = codes[idx]
        q[0, : codes.numel()] = codes[: min(cols, codes.numel())]
        w8 = q.view(torch.float8_e4m3fn)
        lo, hi = scale_range
        s = torch.rand(-(-rows // 128), -(-cols // 128), generator=g) * (hi - lo) + lo
        got = FastQuantizer().dequant_fp8(w8, s, (128, 128))
        want = dequant_fp8(w8, s)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_fast_fp8_dequant_refuses_nan_codes():
    from dsq.streaming.fastquant import FastQuantizer

    q = torch.zeros(128, 128, dtype=torch.uint8)
    q[5, 9] = 0xFF
    with pytest.raises(QuantInputError, match="NaN codes"):
        FastQuantizer().dequant_fp8(q.view(torch.float8_e4m3fn), torch.ones(1, 1), (128, 128))


def test_engine_from_fp8_matches_reference_on_the_product():
    g = torch.Generator().manual_seed(9)
    w8 = (torch.randn(300, 256, generator=g) * 60).to(torch.float8_e4m3fn)
    s = torch.rand(3, 2, generator=g) * 1e-3
    eng = TorchCpuEngine(chunk_elems=128 * 256)
    for name in SCHEMES:
        scheme = dsq.get_scheme(name)
        _same(eng.quantize(w8, s, scheme, "m"), REF.quantize_weight(dequant_fp8(w8, s), scheme))
