"""Weight calibration, quantization and dequantization for every scheme, in numpy.

Weights arrive as float32 arrays ``[..., N, K]`` (bf16/fp16 inputs are widened exactly). Scales are float32
arrays holding values representable in ``scheme.scale_dtype``. The formulas are those of
``dsq/schemes.py``; each function says which part it implements.
"""

from __future__ import annotations

import numpy as np

from dsq.errors import QuantInputError
from dsq.schemes import Granularity, QType, QuantScheme

from .numerics import (
    fp8_e4m3_decode,
    fp8_e4m3_encode,
    fp8_e4m3_round,
    rint,
    round_scale,
    safe_div,
    scale_tiny,
)

TWO_LEVEL_RANGE = 119  #: level-1 int8 range of two-level schemes: 7 * 17, so q4 * s2 always fits int8


def _pad_last(a: np.ndarray, multiple: int) -> np.ndarray:
    pad = (-a.shape[-1]) % multiple
    if not pad:
        return a
    return np.concatenate([a, np.zeros(a.shape[:-1] + (pad,), dtype=a.dtype)], axis=-1)


def _pad_axis(a: np.ndarray, multiple: int, axis: int) -> np.ndarray:
    return np.swapaxes(_pad_last(np.swapaxes(a, axis, -1), multiple), axis, -1)


def reduce_groups(a: np.ndarray, scheme: QuantScheme, op) -> np.ndarray:
    """Apply ``op`` (np.max / np.min) over each scale group of a [..., N, K] array -> scale-shaped array.

    Padding is zeros, which never changes the result: amax >= 0 and asymmetric ranges include 0 anyway.
    """
    n, k = a.shape[-2:]
    if scheme.weight_granularity is Granularity.CHANNEL or scheme.two_level:
        return op(a, axis=-1, keepdims=True)
    if scheme.weight_granularity is Granularity.GROUP:
        g = scheme.group_size
        return op(_pad_last(a, g).reshape(a.shape[:-1] + (-1, g)), axis=-1)
    bn, bk = scheme.block_size
    p = _pad_axis(_pad_last(a, bk), bn, -2)
    blocks = p.reshape(a.shape[:-2] + (p.shape[-2] // bn, bn, p.shape[-1] // bk, bk))
    return op(op(blocks, axis=-1), axis=-2)


def expand_groups(s: np.ndarray, scheme: QuantScheme, n: int, k: int, group: int | None = None) -> np.ndarray:
    """Broadcast a scale-shaped array back to [..., N, K] (each element gets its group's value)."""
    if group is not None:  # level-2 groups of two-level schemes
        return np.repeat(s, group, axis=-1)[..., :k]
    if scheme.weight_granularity is Granularity.CHANNEL or scheme.two_level:
        return np.broadcast_to(s, s.shape[:-1] + (k,))
    if scheme.weight_granularity is Granularity.GROUP:
        return np.repeat(s, scheme.group_size, axis=-1)[..., :k]
    bn, bk = scheme.block_size
    return np.repeat(np.repeat(s, bn, axis=-2)[..., :n, :], bk, axis=-1)[..., :k]


def _symmetric_scale(amax: np.ndarray, divisor: float, scheme: QuantScheme) -> np.ndarray:
    """scale = max(amax / D, tiny) in float32, then rounded to scale_dtype."""
    s = np.maximum(safe_div(amax, np.float32(divisor)), scale_tiny(scheme.scale_dtype))
    return round_scale(s, scheme.scale_dtype, "weight scale")


def calibrate_weight(w: np.ndarray, scheme: QuantScheme) -> dict[str, np.ndarray | None]:
    """Choose weight_scale (and weight_zero_point / weight_group_scale) for float32 weights [..., N, K]."""
    out: dict[str, np.ndarray | None] = {"weight_zero_point": None, "weight_group_scale": None}
    if scheme.two_level:
        s1 = _symmetric_scale(reduce_groups(np.abs(w), scheme, np.max), TWO_LEVEL_RANGE, scheme)
        q8 = np.clip(rint(safe_div(w, s1)), -TWO_LEVEL_RANGE, TWO_LEVEL_RANGE).astype(np.int64)
        g = scheme.group_size
        amax8 = np.max(np.abs(_pad_last(q8, g)).reshape(q8.shape[:-1] + (-1, g)), axis=-1)
        out["weight_scale"] = s1
        out["weight_group_scale"] = np.maximum(1, (amax8 + 6) // 7).astype(np.int8)  # ceil(amax8 / 7)
        return out
    if scheme.weight_symmetric:
        amax = reduce_groups(np.abs(w), scheme, np.max)
        out["weight_scale"] = _symmetric_scale(amax, scheme.weight_divisor(), scheme)
        return out
    qt = scheme.weight_dtype
    lo = np.minimum(reduce_groups(w, scheme, np.min), np.float32(0))
    hi = np.maximum(reduce_groups(w, scheme, np.max), np.float32(0))
    rng = np.subtract(hi, lo, dtype=np.float32)
    s = np.maximum(safe_div(rng, np.float32(qt.qmax - qt.qmin)), scale_tiny(scheme.scale_dtype))
    s = round_scale(s, scheme.scale_dtype, "weight scale")
    zp = np.clip(rint(np.float32(qt.qmin) - safe_div(lo, s)), qt.qmin, qt.qmax)
    out["weight_scale"], out["weight_zero_point"] = s, zp.astype(np.int8)
    return out


def quantize_weight(w: np.ndarray, qp: dict, scheme: QuantScheme) -> np.ndarray:
    """Codes for float32 weights [..., N, K] given calibrated parameters.

    Returns int8 codes (int4 values lie in [-8, 7]; two-level: the int4 level-2 codes) or, for fp8, uint8
    e4m3fn bit patterns.
    """
    n, k = w.shape[-2:]
    s = expand_groups(np.asarray(qp["weight_scale"], dtype=np.float32), scheme, n, k)
    qt = scheme.weight_dtype
    if scheme.two_level:
        q8 = np.clip(rint(safe_div(w, s)), -TWO_LEVEL_RANGE, TWO_LEVEL_RANGE)
        s2 = expand_groups(np.asarray(qp["weight_group_scale"], dtype=np.float64), scheme, n, k,
                           group=scheme.group_size)
        if np.any(s2 < 1):
            raise QuantInputError("weight_group_scale must be integers >= 1")
        return np.clip(rint(q8 / s2), qt.qmin, qt.qmax).astype(np.int8)  # exact: small integers
    if qt is QType.FP8_E4M3:
        v = np.clip(safe_div(w, s), -qt.qmax, qt.qmax)
        return fp8_e4m3_encode(fp8_e4m3_round(v))
    v = safe_div(w, s)
    if qp.get("weight_zero_point") is not None:
        zp = expand_groups(np.asarray(qp["weight_zero_point"], dtype=np.float32), scheme, n, k)
        v = np.add(v, zp, dtype=np.float32)
    return np.clip(rint(v), qt.qmin, qt.qmax).astype(np.int8)


def dequantize_weight(codes: np.ndarray, qp: dict, scheme: QuantScheme) -> np.ndarray:
    """Exact real values of quantized weights, float64 [..., N, K]: (q - zp) * s, q4 * s2 * s1 or e4m3(q) * s.

    Every product here is exact in float64 (small integers or 4-bit significands times float32 scales).
    """
    n, k = codes.shape[-2:]
    s = expand_groups(np.asarray(qp["weight_scale"], dtype=np.float64), scheme, n, k)
    if scheme.weight_dtype is QType.FP8_E4M3:
        return fp8_e4m3_decode(codes) * s
    q = codes.astype(np.float64)
    if scheme.two_level:
        q = q * expand_groups(np.asarray(qp["weight_group_scale"], dtype=np.float64), scheme, n, k,
                              group=scheme.group_size)
    if qp.get("weight_zero_point") is not None:
        q = q - expand_groups(np.asarray(qp["weight_zero_point"], dtype=np.float64), scheme, n, k)
    return q * s


def calibrate_static_activation(lo: np.ndarray, hi: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """input_scale (float32) and input_zero_point (int8) from observed min/max (arrays of shape [..., 1]).

    Asymmetric rule: lo' = min(lo, 0), hi' = max(hi, 0), scale = max((hi' - lo') / 255, tiny),
    zp = clip(rint(-128 - lo' / scale), -128, 127). Symmetric static: scale = max(max(|lo|, |hi|) / 127, tiny).
    """
    lo = np.minimum(np.asarray(lo, dtype=np.float32), np.float32(0))
    hi = np.maximum(np.asarray(hi, dtype=np.float32), np.float32(0))
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise QuantInputError("activation statistics are not finite (no calibration data seen?): "
                              f"min={lo.ravel()[:4]}, max={hi.ravel()[:4]}")
    qt = scheme.act_dtype
    if scheme.act_symmetric:
        amax = np.maximum(-lo, hi)
        s = np.maximum(safe_div(amax, np.float32(qt.qmax)), np.float32(2.0**-126))
        return s.astype(np.float32), np.zeros_like(s, dtype=np.int8)
    rng = np.subtract(hi, lo, dtype=np.float32)
    s = np.maximum(safe_div(rng, np.float32(qt.qmax - qt.qmin)), np.float32(2.0**-126))
    zp = np.clip(rint(np.float32(qt.qmin) - safe_div(lo, s)), qt.qmin, qt.qmax)
    return s.astype(np.float32), zp.astype(np.int8)
