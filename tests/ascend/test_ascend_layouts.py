"""Golden vectors for the Ascend device layouts, each derived by hand from the documented rule."""

import pytest
import torch

from dsq.errors import QuantInputError
from dsq_ascend import layouts as L


def _f32(bits: int) -> torch.Tensor:
    return torch.tensor([bits], dtype=torch.int64).to(torch.int32).view(torch.float32) if bits < 2**31 else \
        torch.tensor([bits - 2**32], dtype=torch.int32).view(torch.float32)


# -- FRACTAL_NZ -----------------------------------------------------------------------------------------
def test_nz_c0_per_dtype():
    assert L.nz_c0(torch.int8) == 32
    assert L.nz_c0(torch.float16) == L.nz_c0(torch.bfloat16) == 16
    assert L.nz_c0(torch.float32) == L.nz_c0(torch.int32) == 16  # itemsize capped at 2


def test_nz_int8_positions_and_zero_padding():
    r, c = 17, 33  # C0 = 32 -> C1 = 2, R1 = 2
    t = ((torch.arange(r * c) % 127) + 1).reshape(r, c).to(torch.int8)  # no zeros, so padding is visible
    nz = L.nd_to_nz(t)
    assert nz.shape == (2, 2, 16, 32)
    # element [r, c] -> [c // 32, r // 16, r % 16, c % 32]
    assert nz[0, 0, 0, 0] == t[0, 0]
    assert nz[0, 0, 5, 31] == t[5, 31]
    assert nz[1, 0, 5, 0] == t[5, 32]
    assert nz[0, 1, 0, 7] == t[16, 7]
    assert nz[1, 1, 0, 0] == t[16, 32]
    assert int((nz != 0).sum()) == r * c  # everything else is zero padding
    assert nz[1, 1, 0, 1] == 0 and nz[0, 1, 1, 0] == 0
    assert torch.equal(L.nz_to_nd(nz, r, c), t)


def test_nz_fp16_stacked_roundtrip():
    t = torch.randn(2, 3, 20).to(torch.float16)  # C0 = 16 -> (2, C1=2, R1=1, 16, 16)
    nz = L.nd_to_nz(t)
    assert nz.shape == (2, 2, 1, 16, 16)
    assert nz[1, 1, 0, 2, 1] == t[1, 2, 17]
    assert torch.equal(L.nz_to_nd(nz, 3, 20), t)


def test_nz_rejects_vectors_and_small_fractals():
    with pytest.raises(QuantInputError):
        L.nd_to_nz(torch.zeros(5, dtype=torch.int8))
    with pytest.raises(QuantInputError):
        L.nz_to_nd(torch.zeros(1, 1, 16, 32, dtype=torch.int8), 17, 3)


# -- int4 in int32 ------------------------------------------------------------------------------------
def test_int4pack_golden_words():
    # nibbles (element 0 lowest): 1, F, 2, E, 7, 8, 0, 3 -> 0x3087E2F1
    q = torch.tensor([[1, -1, 2, -2, 7, -8, 0, 3], [0, 0, 0, 0, 0, 0, 0, -1]], dtype=torch.int32)
    packed = L.pack_int4_to_int32(q)
    assert packed.dtype == torch.int32 and packed.shape == (2, 1)
    assert int(packed[0, 0]) == 0x3087E2F1
    assert int(packed[1, 0]) == 0xF0000000 - 2**32  # top nibble set -> negative int32
    assert torch.equal(L.unpack_int32_to_int4(packed), q.to(torch.int8))


def test_int4pack_rejects_bad_input():
    with pytest.raises(QuantInputError, match="multiple of 8"):
        L.pack_int4_to_int32(torch.zeros(2, 6, dtype=torch.int32))
    with pytest.raises(QuantInputError, match=r"\[-8, 7\]"):
        L.pack_int4_to_int32(torch.full((1, 8), 9, dtype=torch.int32))


def test_output_dim_pairs_golden():
    q = torch.tensor([[1, -8], [-1, 7]], dtype=torch.int8)  # rows 0 and 1 pair up
    pairs = L.pack_int4_pairs_output_dim(q)
    assert pairs.shape == (1, 2)
    assert int(pairs[0, 0]) == 0xF1 - 256  # (-1 << 4) | 1
    assert int(pairs[0, 1]) == 0x78  # (7 << 4) | 8
    assert torch.equal(L.unpack_int4_pairs_output_dim(pairs), q)


def test_pairs_view_as_int32_equals_int4pack_along_n():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-8, 8, (2, 16, 5), generator=g, dtype=torch.int8)  # [E, N, K]
    pairs_kn = L.pack_int4_pairs_output_dim(q).transpose(1, 2).contiguous()  # [E, K, N/2]
    via_pairs = L.int4_pairs_to_int32(pairs_kn)
    direct = L.pack_int4_to_int32(q.transpose(1, 2))  # pack (K, N) along N
    assert via_pairs.shape == (2, 5, 2)
    assert torch.equal(via_pairs, direct)
    # and a plain little-endian view gives the same words
    assert torch.equal(pairs_kn.view(torch.int32), direct)


# -- int64 scale encodings ------------------------------------------------------------------------------
def test_trans_quant_param_truncates_to_fp19_and_sets_flag():
    out = L.trans_quant_param(torch.tensor([1.0, -1.0, 0.1]))
    assert out.dtype == torch.int64
    assert int(out[0]) == (1 << 46) | 0x3F800000
    assert int(out[1]) == (1 << 46) | 0xBF800000  # zero-extended: no sign extension into the high word
    assert int(out[2]) == (1 << 46) | 0x3DCCC000  # 0x3DCCCCCD with the low 13 bits dropped


def test_trans_quant_param_round_mode_ties_to_even():
    s = torch.cat([_f32(0x3F801000), _f32(0x3F803000), _f32(0x3F801001), _f32(0x3F800FFF)])
    rounded = L.trans_quant_param(s, round_mode=1) & 0xFFFFFFFF
    assert rounded.tolist() == [0x3F800000, 0x3F804000, 0x3F802000, 0x3F800000]
    truncated = L.trans_quant_param(s, round_mode=0) & 0xFFFFFFFF
    assert truncated.tolist() == [0x3F800000, 0x3F802000, 0x3F800000, 0x3F800000]


def test_trans_quant_param_offset_bits_37_to_45():
    out = L.trans_quant_param(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([-3.0, 300.0, -2.5, 5.0]))
    base = (1 << 46) | 0x3F800000
    assert int(out[0]) == base | (509 << 37)  # -3 as 9-bit two's complement
    assert int(out[1]) == base | (255 << 37)  # clamped
    assert int(out[2]) == base | (510 << 37)  # -2.5 rounds half to even -> -2
    assert int(out[3]) == base | (5 << 37)
    scale, off = L.decode_deq_scale(out)
    assert scale.tolist() == [1.0] * 4 and off.tolist() == [-3, 255, -2, 5]


def test_raw_bits_form_keeps_all_mantissa_bits():
    s = torch.tensor([0.1, -2.0], dtype=torch.float32)
    bits = L.scale_to_int64_bits(s)
    assert bits.tolist() == [0x3DCCCCCD, 0xC0000000]
    assert torch.equal(L.int64_bits_to_scale(bits), s)


def test_a8w4_scale_bias_golden():
    q = torch.tensor([[1, 2, 3, -1], [-8, 7, 0, 0]], dtype=torch.int8)
    s = torch.tensor([0.5, 0.25])
    assert L.a8w4_scale_bias(q, s).tolist() == [[20.0], [-2.0]]  # 8*0.5*5, 8*0.25*(-1)
    assert L.a8w4_scale_bias(q, s, chunks=2).tolist() == [[12.0, 8.0], [-2.0, 0.0]]
    with pytest.raises(QuantInputError, match="chunks"):
        L.a8w4_scale_bias(q, s, chunks=3)
