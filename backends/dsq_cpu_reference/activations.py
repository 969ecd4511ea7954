"""Activation quantization for every scheme, in numpy (x is float32 [M, K], widened exactly from bf16/fp16).

* int8 per token (dynamic): s = max(amax_row / 127, 2^-126); q = clip(rint(x / s), -128, 127).
* int8 per tensor (static): q = clip(round(x / s + zp), -128, 127); ``x / s + zp`` is float32 arithmetic,
  ``round`` is the scheme's act_rounding.
* fp8 per token / per token-group (dynamic): s = max(amax / 448, 2^-126); q = e4m3(clip(x / s, -448, 448)).
Scales are float32. Codes: int8, or uint8 e4m3fn bit patterns for fp8.
"""

from __future__ import annotations

import numpy as np

from dsq.errors import QuantInputError
from dsq.schemes import ActGranularity, QType, QuantScheme

from .numerics import F32_TINY, fp8_e4m3_decode, fp8_e4m3_encode, fp8_e4m3_round, rint, safe_div


def _row_group_amax(x: np.ndarray, group: int) -> np.ndarray:
    m, k = x.shape
    pad = (-k) % group
    a = np.abs(x)
    if pad:
        a = np.concatenate([a, np.zeros((m, pad), dtype=a.dtype)], axis=1)
    return a.reshape(m, -1, group).max(axis=-1) if m else np.zeros((0, -(-k // group)), np.float32)


def quantize_activation(x: np.ndarray, scheme: QuantScheme, input_scale=None, input_zero_point=None):
    """Return (codes, scale, zero_point or None) for float32 x [M, K] under ``scheme``."""
    qt = scheme.act_dtype
    m, k = x.shape
    if scheme.act_granularity is ActGranularity.TENSOR:
        if input_scale is None:
            raise QuantInputError(f"{scheme.name} has static activations: pass the calibrated input_scale "
                                  "(the packed weight or QParams holding input_scale / input_zero_point)")
        s = np.asarray(input_scale, dtype=np.float32).reshape(1)
        zp = np.zeros(1, np.int8) if input_zero_point is None else np.asarray(input_zero_point, np.int8).reshape(1)
        if not (np.isfinite(s).all() and s[0] > 0):
            raise QuantInputError(f"input_scale must be a positive finite float32, got {s}")
        v = np.add(safe_div(x, s), zp.astype(np.float32), dtype=np.float32)
        q = np.clip(rint(v, scheme.act_rounding), qt.qmin, qt.qmax).astype(np.int8)
        return q, s, (None if scheme.act_symmetric else zp)
    divisor = np.float32(448.0 if qt is QType.FP8_E4M3 else qt.qmax)
    if scheme.act_granularity is ActGranularity.TOKEN:
        amax = np.abs(x).max(axis=1, keepdims=True) if k and m else np.zeros((m, 1), np.float32)
        s = np.maximum(safe_div(amax, divisor), F32_TINY)
        s_full = s
    else:
        g = scheme.act_group_size
        s = np.maximum(safe_div(_row_group_amax(x, g), divisor), F32_TINY)
        s_full = np.repeat(s, g, axis=1)[:, :k]
    v = safe_div(x, s_full)
    if qt is QType.FP8_E4M3:
        codes = fp8_e4m3_encode(fp8_e4m3_round(np.clip(v, -448.0, 448.0)))
    else:
        codes = np.clip(rint(v), qt.qmin, qt.qmax).astype(np.int8)
    return codes, s.astype(np.float32), None


def dequantize_activation(codes: np.ndarray, scale: np.ndarray, zero_point, scheme: QuantScheme) -> np.ndarray:
    """Exact float64 values of quantized activations [M, K]: (q - zp) * s or e4m3(q) * s."""
    m, k = codes.shape
    q = fp8_e4m3_decode(codes) if scheme.act_dtype is QType.FP8_E4M3 else codes.astype(np.float64)
    if zero_point is not None:
        q = q - np.asarray(zero_point, np.float64).reshape(1, 1)
    s = np.asarray(scale, np.float64)
    if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
        s = np.repeat(s, scheme.act_group_size, axis=1)[:, :k]
    return q * s.reshape((1, 1) if s.size == 1 and scheme.act_granularity is ActGranularity.TENSOR else s.shape)
