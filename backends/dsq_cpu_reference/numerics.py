"""Number-format primitives of the reference, in plain numpy: rounding, fp8 e4m3fn, bf16/fp16 scales.

These functions are the definition of the bit patterns dsq produces. They are deliberately written with
explicit formulas (no ml_dtypes, no torch casts) so that a reader can check every rule against the
format specification; tests cross-check them against torch's own casts.
"""

from __future__ import annotations

import numpy as np

from dsq.errors import QuantInputError
from dsq.schemes import RoundMode

F32_TINY = np.float32(2.0**-126)  #: smallest normal float32 (and bfloat16) number
F16_TINY = np.float32(2.0**-14)  #: smallest normal float16 number
FP8_MAX = 448.0  #: largest finite e4m3fn value: 1.75 * 2^8
FP8_MIN_NORMAL = 2.0**-6  #: e4m3fn exponent bias 7: smallest normal 2^(1-7)
FP8_SUBNORMAL_STEP = 2.0**-9  #: spacing of e4m3fn subnormals: 2^-6 / 8


def rint(v: np.ndarray, mode: RoundMode = RoundMode.HALF_EVEN) -> np.ndarray:
    """Round to the nearest integer (as float64). HALF_EVEN: ties to even (IEEE default, numpy rint).
    HALF_AWAY: ties away from zero (sign(v) * floor(|v| + 0.5), evaluated in float64 so the +0.5 is exact)."""
    v64 = np.asarray(v, dtype=np.float64)
    if mode is RoundMode.HALF_EVEN:
        return np.rint(v64)
    return np.sign(v64) * np.floor(np.abs(v64) + 0.5)


def scale_tiny(scale_dtype: str) -> np.float32:
    """Smallest scale a group may get (an all-zero group's scale): the smallest normal of scale_dtype."""
    return F16_TINY if scale_dtype == "float16" else F32_TINY


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even); returned as float32 holding bf16 values.

    bfloat16 keeps the top 16 bits of a float32: add 0x7FFF plus the lowest kept bit, then truncate.
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def round_scale(s: np.ndarray, scale_dtype: str, what: str = "scale") -> np.ndarray:
    """Round float32 scales to ``scale_dtype`` (ties to even); float32 result holding representable values."""
    s = np.asarray(s, dtype=np.float32)
    if scale_dtype == "float32":
        out = s
    elif scale_dtype == "bfloat16":
        out = round_to_bf16(s)
    elif scale_dtype == "float16":
        with np.errstate(over="ignore"):
            out = s.astype(np.float16).astype(np.float32)
    else:
        raise QuantInputError(f"unknown scale dtype {scale_dtype!r}; expected float32, bfloat16 or float16")
    if not np.isfinite(out).all():
        raise QuantInputError(f"{what} overflows {scale_dtype} (largest {float(s.max()):.4g}); "
                              "use a wider scale_dtype for weights this large")
    return out


def fp8_e4m3_round(v: np.ndarray) -> np.ndarray:
    """Round float values already clipped to [-448, 448] to the nearest e4m3fn value (ties to even).

    For |v| >= 2^-6 the spacing is 2^(floor(log2|v|) - 3) (3 mantissa bits); below, subnormals are spaced
    2^-9. Dividing by a power of two is exact, so ``rint(|v| / step) * step`` is exact rounding. A value that
    rounds up into the next binade (e.g. 1.9375 -> 2) is still representable. The sign is kept (-0 stays -0).
    """
    v64 = np.asarray(v, dtype=np.float64)
    a = np.abs(v64)
    if np.any(a > FP8_MAX):
        raise QuantInputError("fp8_e4m3_round expects values clipped to [-448, 448]")
    _, exp = np.frexp(a)  # a = m * 2^exp with m in [0.5, 1): floor(log2 a) = exp - 1
    step = np.where(a >= FP8_MIN_NORMAL, np.ldexp(1.0, exp - 1 - 3), FP8_SUBNORMAL_STEP)
    return np.copysign(np.rint(a / step) * step, v64)


def fp8_e4m3_encode(r: np.ndarray) -> np.ndarray:
    """Bit patterns (uint8) of values that are exactly representable in e4m3fn (output of fp8_e4m3_round).

    Layout: sign bit 7, exponent bits 6-3 (bias 7; 0 means subnormal), mantissa bits 2-0.
    """
    r = np.asarray(r, dtype=np.float64)
    a = np.abs(r)
    sign = np.signbit(r).astype(np.uint8) << 7
    _, exp = np.frexp(a)
    e = exp - 1  # floor(log2 a) for a > 0
    normal = a >= FP8_MIN_NORMAL
    mant_normal = np.rint((np.ldexp(a, -np.where(normal, e, 0)) - 1.0) * 8.0)
    exp_field = np.where(normal, e + 7, 0)
    mant = np.where(normal, mant_normal, np.rint(a / FP8_SUBNORMAL_STEP))
    return (sign | (exp_field.astype(np.uint8) << 3) | mant.astype(np.uint8)).astype(np.uint8)


def fp8_e4m3_decode(bits: np.ndarray) -> np.ndarray:
    """Values (float64) of e4m3fn bit patterns. 0x7F/0xFF (NaN) are rejected: dsq never produces them."""
    b = np.asarray(bits, dtype=np.uint8).astype(np.int64)
    if np.any((b & 0x7F) == 0x7F):
        raise QuantInputError("fp8 data contains NaN codes (0x7F/0xFF)")
    exp_field, mant = (b >> 3) & 0xF, b & 7
    mag = np.where(exp_field == 0, mant * FP8_SUBNORMAL_STEP,
                   np.ldexp(1.0 + mant / 8.0, exp_field - 7))
    return np.where(b & 0x80, -mag, mag)


def safe_div(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """float32 division x / s, correctly rounded (IEEE), as every backend must compute it."""
    return np.divide(np.asarray(x, dtype=np.float32), np.asarray(s, dtype=np.float32), dtype=np.float32)
