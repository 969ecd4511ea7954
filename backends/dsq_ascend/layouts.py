"""Ascend device layouts in pure torch, bit-exact with the documented torch_npu rules.

Every function here is a pure re-layout or re-encoding (no arithmetic that could round differently on
another machine), runs on any torch device, and is the single definition the emulated ops, the backend
and the msModelSlim checkpoint code share. Sources: /work/shared/reference/torch_npu.md (FRACTAL_NZ,
int4 packing, int64 scale encoding) and formats.md section 2 (msModelSlim W4A8 output-dim pairs, scale_bias).

FRACTAL_NZ (ACL format 29)
    A matrix (..., R, C) is stored as (..., C1, R1, 16, C0) with C1 = ceil(C / C0), R1 = ceil(R / 16):
    element [r, c] lives at [c // C0, r // 16, r % 16, c % C0]; the padding is zero. C0 = 32 bytes /
    itemsize with the itemsize capped at 2: 32 for int8, 16 for fp16/bf16/fp32/int32.

int4 in int32 (``npu_convert_weight_to_int4pack``)
    Along the last dim, word i = sum_j (w[8i + j] & 0xF) << 4j: element 8i in the lowest nibble, the
    nibbles are two's-complement int4, the word is read as a signed int32.

int64 scales (``npu_trans_quant_param``)
    ``out = (bits(fp32 scale) & 0xFFFFE000) | 1 << 46`` (FP19: sign, 8 exponent bits, the top 10 mantissa
    bits), optional offset ``clamp(round(offset), -256, 255)`` as 9-bit two's complement in bits 37..45.
    vllm-ascend's grouped-matmul path instead zero-extends the raw fp32 bits (no flag, all 23 mantissa bits).
"""

from __future__ import annotations

import torch

from dsq.errors import QuantInputError

__all__ = [
    "nz_c0", "nd_to_nz", "nz_to_nd",
    "pack_int4_to_int32", "unpack_int32_to_int4",
    "pack_int4_pairs_output_dim", "unpack_int4_pairs_output_dim", "int4_pairs_to_int32",
    "trans_quant_param", "decode_deq_scale", "scale_to_int64_bits", "int64_bits_to_scale",
    "a8w4_scale_bias",
]

FP19_MASK = 0xFFFFE000  #: keeps sign, exponent and the top 10 mantissa bits of an fp32
DEQ_FLAG = 1 << 46  #: marks an int64 quant parameter as FP19-encoded
_U32 = 0xFFFFFFFF


# -- FRACTAL_NZ ------------------------------------------------------------------------------------
def nz_c0(dtype: torch.dtype) -> int:
    """C0 (elements per 32-byte fractal row) for ``dtype``: 32 / min(itemsize, 2)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 32 // min(itemsize, 2)


def nd_to_nz(t: torch.Tensor, c0: int | None = None) -> torch.Tensor:
    """(..., R, C) -> (..., ceil(C/C0), ceil(R/16), 16, C0), zero padded; C0 from the dtype unless given."""
    if t.ndim < 2:
        raise QuantInputError(f"FRACTAL_NZ needs a tensor with at least 2 dims, got shape {tuple(t.shape)}")
    c0 = c0 or nz_c0(t.dtype)
    *lead, r, c = t.shape
    r1, c1 = -(-r // 16), -(-c // c0)
    padded = torch.nn.functional.pad(t, (0, c1 * c0 - c, 0, r1 * 16 - r)) if (r1 * 16, c1 * c0) != (r, c) else t
    n = len(lead)
    tiles = padded.reshape(*lead, r1, 16, c1, c0)
    return tiles.permute(*range(n), n + 2, n, n + 1, n + 3).contiguous()


def nz_to_nd(fractal: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`nd_to_nz`: (..., C1, R1, 16, C0) -> (..., rows, cols), dropping the padding."""
    if fractal.ndim < 4 or fractal.shape[-2] != 16:
        raise QuantInputError(f"not a FRACTAL_NZ tensor (..., C1, R1, 16, C0): shape {tuple(fractal.shape)}")
    *lead, c1, r1, _, c0 = fractal.shape
    if r1 * 16 < rows or c1 * c0 < cols:
        raise QuantInputError(f"FRACTAL_NZ shape {tuple(fractal.shape)} cannot hold a ({rows}, {cols}) matrix")
    n = len(lead)
    nd = fractal.permute(*range(n), n + 1, n + 2, n, n + 3).reshape(*lead, r1 * 16, c1 * c0)
    return nd[..., :rows, :cols].contiguous()


# -- int4 packed in int32 ----------------------------------------------------------------------------
def _check_int4(q: torch.Tensor, name: str) -> None:
    if q.dtype.is_floating_point or q.dtype == torch.bool:
        raise QuantInputError(f"{name} must hold integer int4 values, got dtype {q.dtype}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise QuantInputError(f"{name} has values in [{int(q.min())}, {int(q.max())}]; int4 needs [-8, 7]")


def pack_int4_to_int32(q: torch.Tensor) -> torch.Tensor:
    """int4 values (any int dtype, [..., n], n % 8 == 0) -> int32 [..., n/8], element 8i+j in bits 4j..4j+3.

    What ``npu_convert_weight_to_int4pack`` does on the host for an ND weight.
    """
    _check_int4(q, "int4 weight")
    if q.shape[-1] % 8:
        raise QuantInputError(f"int4 packing needs the last dim to be a multiple of 8, got shape {tuple(q.shape)}")
    nib = (q.to(torch.int64) & 0xF).reshape(*q.shape[:-1], q.shape[-1] // 8, 8)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=q.device)
    word = (nib << shifts).sum(-1)  # in [0, 2^32)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def unpack_int32_to_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4_to_int32`: int32 [..., n/8] -> int8 [..., n] in [-8, 7]."""
    if packed.dtype != torch.int32:
        raise QuantInputError(f"packed int4 weight must be int32, got {packed.dtype}")
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=packed.device)
    nib = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF
    vals = torch.where(nib >= 8, nib - 16, nib)
    return vals.reshape(*packed.shape[:-1], packed.shape[-1] * 8).to(torch.int8)


# -- msModelSlim W4A8: int4 pairs along the output dim ------------------------------------------------
def pack_int4_pairs_output_dim(q: torch.Tensor) -> torch.Tensor:
    """int4 [..., N, K] -> int8 [..., N/2, K]: byte[j, k] = (q[2j+1, k] << 4) | (q[2j, k] & 0xF).

    msModelSlim's W4A8_DYNAMIC v1 on-disk form (even output row in the low nibble, two's complement).
    """
    _check_int4(q, "int4 weight")
    if q.ndim < 2 or q.shape[-2] % 2:
        raise QuantInputError(f"output-dim int4 pairs need an even number of rows, got shape {tuple(q.shape)}")
    q = q.to(torch.int16)
    lo, hi = q[..., 0::2, :], q[..., 1::2, :]
    byte = ((hi & 0xF) << 4) | (lo & 0xF)  # in [0, 255]
    return torch.where(byte >= 128, byte - 256, byte).to(torch.int8)


def unpack_int4_pairs_output_dim(pairs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4_pairs_output_dim`: int8 [..., N/2, K] -> int8 [..., N, K]."""
    if pairs.dtype != torch.int8:
        raise QuantInputError(f"int4 pairs must be int8 bytes, got {pairs.dtype}")
    b = pairs.to(torch.int16) & 0xFF
    lo, hi = b & 0xF, b >> 4
    lo, hi = torch.where(lo >= 8, lo - 16, lo), torch.where(hi >= 8, hi - 16, hi)
    out = torch.stack((lo, hi), dim=-2)  # [..., N/2, 2, K]
    return out.reshape(*pairs.shape[:-2], pairs.shape[-2] * 2, pairs.shape[-1]).to(torch.int8)


def int4_pairs_to_int32(pairs_kn: torch.Tensor) -> torch.Tensor:
    """vllm-ascend's load step: transposed pairs int8 [..., K, N/2] -> int32 [..., K, N/8] (little-endian view).

    Four consecutive bytes along N/2 form one word, first byte lowest, which equals
    :func:`pack_int4_to_int32` of the unpacked [..., K, N] values (checked in the golden tests).
    """
    if pairs_kn.dtype != torch.int8 or pairs_kn.shape[-1] % 4:
        raise QuantInputError(
            f"int4 pairs must be int8 with a last dim divisible by 4, got {pairs_kn.dtype} {tuple(pairs_kn.shape)}")
    b = (pairs_kn.to(torch.int64) & 0xFF).reshape(*pairs_kn.shape[:-1], pairs_kn.shape[-1] // 4, 4)
    word = (b << torch.arange(0, 32, 8, dtype=torch.int64, device=b.device)).sum(-1)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


# -- int64 scale encodings ------------------------------------------------------------------------------
def _f32_bits(scale: torch.Tensor) -> torch.Tensor:
    """fp32 bit pattern as a non-negative int64 in [0, 2^32)."""
    if scale.dtype != torch.float32:
        raise QuantInputError(f"scale must be float32 to take its bit pattern, got {scale.dtype}")
    return scale.contiguous().view(torch.int32).to(torch.int64) & _U32


def _bits_to_f32(bits: torch.Tensor) -> torch.Tensor:
    b = bits & _U32
    return torch.where(b >= 2**31, b - 2**32, b).to(torch.int32).view(torch.float32)


def trans_quant_param(scale: torch.Tensor, offset: torch.Tensor | None = None, round_mode: int = 0) -> torch.Tensor:
    """fp32 scale (and optional offset) -> int64 as ``npu_trans_quant_param``.

    round_mode 0 truncates the mantissa to 10 bits; 1 rounds it to nearest, ties to even (RINT). The offset
    is rounded with ``torch.round`` (half to even), clamped to [-256, 255] and stored as 9-bit two's
    complement in bits 37..45. Bit 46 is always set.
    """
    if round_mode not in (0, 1):
        raise QuantInputError(f"round_mode must be 0 (truncate) or 1 (round), got {round_mode}")
    bits = _f32_bits(scale)
    if round_mode == 1:  # round to nearest even at mantissa bit 13; a carry into the exponent is correct rounding
        bits = (bits + 0x0FFF + ((bits >> 13) & 1)) & _U32
    out = (bits & FP19_MASK) | DEQ_FLAG
    if offset is not None:
        o = torch.round(offset.to(torch.float32)).clamp(-256, 255).to(torch.int64)
        out = out | ((o & 0x1FF) << 37)
    return out


def decode_deq_scale(encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 from :func:`trans_quant_param` -> (fp32 scale with 10 mantissa bits, int64 offset in [-256, 255])."""
    if encoded.dtype != torch.int64:
        raise QuantInputError(f"an encoded deq_scale is int64, got {encoded.dtype}")
    scale = _bits_to_f32(encoded & FP19_MASK)
    o = (encoded >> 37) & 0x1FF
    return scale, torch.where(o >= 256, o - 512, o)


def scale_to_int64_bits(scale: torch.Tensor) -> torch.Tensor:
    """The raw-bits form (vllm-ascend grouped matmul): fp32 bits zero-extended into int64, no flag."""
    return _f32_bits(scale)


def int64_bits_to_scale(bits: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`scale_to_int64_bits` (uses the low 32 bits)."""
    if bits.dtype != torch.int64:
        raise QuantInputError(f"raw-bits scales are int64, got {bits.dtype}")
    return _bits_to_f32(bits)


# -- A8W4 grouped-matmul bias ----------------------------------------------------------------------------
def a8w4_scale_bias(q: torch.Tensor, scale: torch.Tensor, chunks: int = 1) -> torch.Tensor:
    """``scale_bias[..., n, c] = 8 * scale[..., n] * sum_{k in chunk c} q[..., n, k]`` as float32.

    q: int4 values [..., N, K]; scale: float32 [..., N] (or [..., N, 1]). The A8W4 grouped matmul computes
    ``((x - 8) @ w * scale + bias) * pts``, so this bias cancels the -8 shift exactly in real arithmetic.
    The integer row sum is exact; the product is formed in float64 and rounded once to float32.
    ``chunks`` splits K into equal parts (msModelSlim writes 16 for down/o projections so tensor parallel
    ranks can sum their share); result shape [..., N, chunks].
    """
    _check_int4(q, "int4 weight")
    k = q.shape[-1]
    if chunks < 1 or k % chunks:
        raise QuantInputError(f"K={k} cannot be split into {chunks} equal chunks for scale_bias")
    s = scale.reshape(*q.shape[:-1]).to(torch.float64)
    sums = q.to(torch.int64).reshape(*q.shape[:-1], chunks, k // chunks).sum(-1).to(torch.float64)
    return (8.0 * s.unsqueeze(-1) * sums).to(torch.float32)
