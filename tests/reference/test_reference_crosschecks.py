"""Cross-check the reference's number formats and packing against independent implementations:
torch's float8_e4m3fn / bfloat16 / float16 casts and compressed-tensors' own pack/quantize functions."""

import numpy as np
import pytest
import torch

import dsq
from dsq_cpu_reference.numerics import fp8_e4m3_decode, fp8_e4m3_encode, fp8_e4m3_round, round_scale
from dsq_cpu_reference.packing import pack_codes, pack_zero_points, unpack_codes

REF = dsq.get_backend("cpu")


def test_fp8_decode_matches_torch_for_every_code():
    codes = np.array([c for c in range(256) if c & 0x7F != 0x7F], dtype=np.uint8)
    ours = fp8_e4m3_decode(codes)
    theirs = torch.from_numpy(codes).view(torch.float8_e4m3fn).to(torch.float64).numpy()
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(fp8_e4m3_encode(ours), codes)  # encode inverts decode, -0 included


def test_fp8_rounding_matches_torch_cast():
    rng = np.random.default_rng(0)
    v = np.concatenate([
        rng.uniform(-448, 448, 20000), rng.uniform(-1, 1, 20000) * 2.0 ** rng.integers(-12, 2, 20000),
        # every midpoint between neighbouring codes: the ties
        (fp8_e4m3_decode(np.arange(0, 126, dtype=np.uint8)) + fp8_e4m3_decode(np.arange(1, 127, dtype=np.uint8))) / 2,
    ]).astype(np.float32)
    v = np.concatenate([v, -v])
    ours = fp8_e4m3_encode(fp8_e4m3_round(v))
    theirs = torch.from_numpy(v).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype,name", [(torch.bfloat16, "bfloat16"), (torch.float16, "float16")])
def test_scale_rounding_matches_torch_cast(dtype, name):
    rng = np.random.default_rng(1)
    s = (rng.uniform(0.5, 1.0, 50000) * 2.0 ** rng.integers(-14, 10, 50000)).astype(np.float32)
    theirs = torch.from_numpy(s).to(dtype).float().numpy()
    np.testing.assert_array_equal(round_scale(s, name), theirs)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [1, 7, 8, 33, 130])
def test_packing_matches_compressed_tensors(bits, k):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    rng = np.random.default_rng(k)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    q = rng.integers(lo, hi, size=(5, k)).astype(np.int8)
    theirs = helpers.pack_to_int32(torch.from_numpy(q), bits).numpy()
    np.testing.assert_array_equal(pack_codes(q, bits), theirs)
    back = helpers.unpack_from_int32(torch.from_numpy(pack_codes(q, bits)), bits, torch.Size((5, k))).numpy()
    np.testing.assert_array_equal(unpack_codes(pack_codes(q, bits), bits, k), back)
    # zero points are packed along dim 0
    theirs0 = helpers.pack_to_int32(torch.from_numpy(q), bits, packed_dim=0).numpy()
    np.testing.assert_array_equal(pack_zero_points(q, bits), theirs0)


def test_int4_group_quantization_matches_compressed_tensors():
    """Same scales and codes as compressed-tensors' own observer math for symmetric int4 group-128."""
    ct_helpers = pytest.importorskip("compressed_tensors.quantization.utils.helpers")
    fwd = pytest.importorskip("compressed_tensors.quantization.lifecycle.forward")
    from compressed_tensors.quantization import QuantizationArgs

    torch.manual_seed(0)
    w = torch.randn(16, 256)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128)
    g = w.reshape(16, 2, 128)
    scale, zp = ct_helpers.calculate_qparams(g.amin(-1), g.amax(-1), args)
    q_ct = fwd.quantize(w, scale, zp, args)
    packed = REF.quantize_weight(w, dsq.get_scheme("w4a16"))
    codes, _ = REF.unpack(packed, dsq.get_scheme("w4a16"))
    np.testing.assert_array_equal(packed["weight_scale"].numpy(), scale.float().numpy())
    np.testing.assert_array_equal(codes.numpy(), q_ct.to(torch.int8).numpy())
