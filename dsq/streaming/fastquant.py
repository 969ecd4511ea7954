"""Vectorised torch calibrate + pack for the data-free schemes, bit-identical to the numpy reference.

The numpy oracle (``dsq_cpu_reference``) widens to float64 and builds several full-size temporaries per
weight; streaming a 671B checkpoint through it on a CPU would take days. This module computes the same bits
with float32 torch operations on row chunks (tests/streaming/test_streaming_fastquant.py compares every
supported scheme with the reference, including ties, subnormal fp8 codes, all-zero groups and short edge
groups). Why each step is exact (notation of dsq/schemes.py; ``/`` is IEEE float32 division, correctly
rounded on every torch CPU build, as in the reference's ``safe_div``):

* symmetric int: ``s = max(amax / D, tiny)`` rounded to ``scale_dtype`` by torch's cast (round half to
  even, as the reference's bit-level rounding), ``q = clip(round(w / s))`` with ``torch.round`` = half to even.
* two-level: ``q8 = clip(round(w / s1), -119, 119)``, ``s2 = max(1, ceil(max|q8| / 7))`` in integers,
  ``q4 = clip(round(q8 / s2))``; the reference divides in float64, here in float32: both quotients of these
  small integers are within 2^-20 of the true value while a non-tie quotient is at least 1/34 from a tie, and
  ties (exact halves) are exact in both, so the rounded codes agree.
* fp8: ``e4m3(clip(w / s, -448, 448))`` by torch's float32 -> float8_e4m3fn cast, which rounds to nearest,
  ties to even, keeps the sign of zero and handles subnormals like the reference's explicit formula.
* asymmetric int: ``zp = clip(round(qmin - lo / s))``, ``q = clip(round(w / s + zp))``, the sum in float32.

Packing writes the canonical words directly: biased codes ``u = q + 2^(b-1)`` are paired into bytes (element
``2j`` in the low nibble) and four bytes read as one little-endian int32, which puts element ``i`` in bits
``b*i`` exactly as :func:`dsq.checkpoint.bits.pack_words` does.
"""

from __future__ import annotations

import sys

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight, weight_tensor_name
from dsq.schemes import Granularity, QType, QuantScheme

__all__ = ["fast_supported", "quantize_rows", "pack_codes_fast", "concat_rows"]

_SCALE_DT = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TINY = {"float32": 2.0**-126, "bfloat16": 2.0**-126, "float16": 2.0**-14}
_TWO_LEVEL_RANGE = 119.0


def fast_supported(scheme: QuantScheme) -> bool:
    """Whether :func:`quantize_rows` handles ``scheme`` (every data-free weight layout dsq has)."""
    if scheme.static_activations or sys.byteorder != "little":
        return False
    if scheme.weight_dtype is QType.FP8_E4M3:
        return scheme.weight_granularity is Granularity.BLOCK
    return True


def pack_codes_fast(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes int8 ``[R, K]`` -> canonical int32 words ``[R, ceil(K*bits/32)]`` (padding codes u = 0)."""
    r, k = q.shape
    per = 32 // bits
    pad = (-k) % per
    u = (q.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    if pad:
        u = torch.cat([u, u.new_zeros(r, pad)], dim=1)
    if bits == 4:
        u = u[:, 0::2] | (u[:, 1::2] << 4)  # element 2j in the low nibble of byte j
    return u.contiguous().view(-1).view(torch.int32).view(r, -1)


def _tiny(scheme: QuantScheme) -> float:
    return _TINY[scheme.scale_dtype]


def _round_scale(s: torch.Tensor, scheme: QuantScheme, name: str) -> torch.Tensor:
    """float32 scales -> scale_dtype (half to even); refuses an overflow like the reference does."""
    out = s.to(_SCALE_DT[scheme.scale_dtype])
    if not torch.isfinite(out).all():
        raise QuantInputError(f"{name}: weight scale overflows {scheme.scale_dtype} (largest "
                              f"{float(s.max()):.4g}); use a wider scale_dtype for weights this large")
    return out


def _check_finite(amax: torch.Tensor, name: str) -> None:
    # amax reductions propagate NaN and keep Inf, so one check on the small reduced tensor covers the weight
    if not torch.isfinite(amax).all():
        raise QuantInputError(f"{name} has NaN or Inf values; quantization needs finite weights")


def _grouped(w: torch.Tensor, g: int) -> torch.Tensor:
    """[R, K] -> [R, ceil(K/g), g], zero-padded (zeros never change amax, or min/max clipped at 0)."""
    r, k = w.shape
    pad = (-k) % g
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.view(r, -1, g)


def _symmetric_int(w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
    r, k = w.shape
    qt = scheme.weight_dtype
    g = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
    wg = _grouped(w, g)
    amax = wg.abs().amax(dim=-1)
    _check_finite(amax, name)
    s = _round_scale(torch.clamp(amax / torch.tensor(scheme.weight_divisor()), min=_tiny(scheme)), scheme, name)
    q = torch.round(wg / s.float().unsqueeze(-1)).clamp_(qt.qmin, qt.qmax).to(torch.int8).view(r, -1)[:, :k]
    return {"codes": q, "weight_scale": s}


def _asymmetric_int(w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
    r, k = w.shape
    qt = scheme.weight_dtype
    g = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
    wg = _grouped(w, g)
    lo = wg.amin(dim=-1).clamp_(max=0.0)
    hi = wg.amax(dim=-1).clamp_(min=0.0)
    _check_finite(hi - lo, name)
    s = torch.clamp((hi - lo) / torch.tensor(float(qt.qmax - qt.qmin)), min=_tiny(scheme))
    s32 = _round_scale(s, scheme, name).float()
    zp = torch.round(torch.tensor(float(qt.qmin)) - lo / s32).clamp_(qt.qmin, qt.qmax)
    v = wg / s32.unsqueeze(-1) + zp.unsqueeze(-1)
    q = torch.round(v).clamp_(qt.qmin, qt.qmax).to(torch.int8).view(r, -1)[:, :k]
    return {"codes": q, "weight_scale": s32.to(_SCALE_DT[scheme.scale_dtype]), "zero_point": zp.to(torch.int8)}


def _two_level(w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
    r, k = w.shape
    amax = w.abs().amax(dim=-1, keepdim=True)
    _check_finite(amax, name)
    s1 = _round_scale(torch.clamp(amax / torch.tensor(_TWO_LEVEL_RANGE), min=_tiny(scheme)), scheme, name)
    q8 = torch.round(w / s1.float()).clamp_(-_TWO_LEVEL_RANGE, _TWO_LEVEL_RANGE)
    q8g = _grouped(q8, scheme.group_size)
    amax8 = q8g.abs().amax(dim=-1).to(torch.int32)
    s2 = torch.clamp((amax8 + 6) // 7, min=1)  # ceil(amax8 / 7), at least 1
    q4 = torch.round(q8g / s2.unsqueeze(-1).float()).clamp_(-8, 7).to(torch.int8).view(r, -1)[:, :k]
    return {"codes": q4, "weight_scale": s1, "group_scale": s2.to(torch.int8)}


def _fp8_block(w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
    r, k = w.shape
    bn, bk = scheme.block_size
    pr, pk = (-r) % bn, (-k) % bk
    wp = torch.nn.functional.pad(w, (0, pk, 0, pr)) if (pr or pk) else w
    nb_r, nb_k = wp.shape[0] // bn, wp.shape[1] // bk
    blocks = wp.view(nb_r, bn, nb_k, bk)
    amax = blocks.abs().amax(dim=(1, 3))
    _check_finite(amax, name)
    s = _round_scale(torch.clamp(amax / torch.tensor(448.0), min=_tiny(scheme)), scheme, name)
    v = (blocks / s.float()[:, None, :, None]).clamp_(-448.0, 448.0)
    q = v.to(torch.float8_e4m3fn).view(nb_r * bn, nb_k * bk)[:r, :k].contiguous()
    return {"codes": q, "weight_scale": s}


def quantize_rows(w: torch.Tensor, scheme: QuantScheme, name: str = "weight") -> PackedWeight:
    """calibrate + pack of a float32 ``[R, K]`` weight (or row chunk) into dsq's canonical PackedWeight.

    The result equals ``get_backend("cpu").quantize_weight(w, scheme)`` bit for bit (no activation
    tensors: data-free schemes only). Row chunks concatenated with :func:`concat_rows` equal the whole
    weight's result when chunks start at multiples of the scheme's row unit (block rows for FP8, 8 for
    packed zero points).
    """
    if not fast_supported(scheme):
        raise QuantInputError(f"{name}: the streaming fast path does not handle {scheme.name}")
    if w.dtype != torch.float32 or w.ndim != 2:
        raise QuantInputError(f"{name}: quantize_rows expects a float32 [R, K] tensor, got {w.dtype} {tuple(w.shape)}")
    r, k = w.shape
    if scheme.weight_dtype is QType.FP8_E4M3:
        parts = _fp8_block(w, scheme, name)
    elif scheme.two_level:
        parts = _two_level(w, scheme, name)
    elif scheme.weight_symmetric:
        parts = _symmetric_int(w, scheme, name)
    else:
        parts = _asymmetric_int(w, scheme, name)
    t: dict[str, torch.Tensor] = {}
    codes = parts["codes"]
    if weight_tensor_name(scheme) == "weight_packed":
        t["weight_packed"] = pack_codes_fast(codes, scheme.weight_bits)
    else:
        t["weight"] = codes.contiguous()
    t["weight_scale"] = parts["weight_scale"].reshape(scheme.scale_shape(r, k)).contiguous()
    if "zero_point" in parts:  # packed along N: transpose, pack rows, transpose back
        zp = parts["zero_point"]
        t["weight_zero_point"] = pack_codes_fast(zp.t().contiguous(), scheme.weight_bits).t().contiguous()
    if "group_scale" in parts:
        t["weight_group_scale"] = parts["group_scale"].contiguous()
    t["weight_shape"] = torch.tensor([r, k], dtype=torch.int64)
    return PackedWeight(scheme.name, (r, k), t)


def concat_rows(parts: list[PackedWeight]) -> PackedWeight:
    """Row chunks of one weight (data-free canonical tensors, all row-major along dim 0) -> the whole weight."""
    if len(parts) == 1:
        return parts[0]
    k = parts[0].shape[1]
    n = sum(p.shape[0] for p in parts)
    out = {}
    for key in parts[0].tensors:
        if key == "weight_shape":
            out[key] = torch.tensor([n, k], dtype=torch.int64)
        else:
            out[key] = torch.cat([p[key] for p in parts], dim=0)
    return PackedWeight(parts[0].scheme, (n, k), out)
