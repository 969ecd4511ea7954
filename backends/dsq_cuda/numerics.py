"""Bit-exact scalar rules shared by the Triton kernels (calibrate, pack, activation quantization).

Every function here reproduces one IEEE float32 operation of the numpy reference exactly, on the GPU and in
the Triton interpreter alike (so neither libdevice, which the interpreter lacks, nor Triton's default fp8
cast, whose rounding differs between the two, is used):

* ``rne(x)``: round half to even to an integer, for ``|x| < 2**22``. Adding and subtracting 1.5 * 2**23
  makes the float32 adder do the rounding (its default mode is round-to-nearest-even); callers clamp first,
  and clamping to integer bounds commutes with rounding, so the range condition always holds.
* ``round_half_away(x)``: ties away from zero (Ascend's CAST_ROUND), from the truncation and the exact
  fraction ``x - trunc(x)``.
* ``e4m3(v)``: the float32 value of the nearest float8 e4m3fn number to ``v`` (``|v| <= 448``), ties to even.
  The e4m3 spacing near ``v`` is ``2**(max(e, -6) - 3)`` for ``v`` in ``[2**e, 2**(e+1))``; scaling by its
  inverse (a power of two, exact), rounding to an integer with ``rne`` and scaling back is exact. The sign is
  copied from ``v`` so that tiny negatives give -0 as the reference does. Casting the result to fp8 is exact.
* Divisions use ``tl.math.div_rn`` (correctly rounded), never Triton's default approximate division.
"""

from __future__ import annotations

import triton
import triton.language as tl

_MAGIC = 12582912.0  # 1.5 * 2**23


@triton.jit
def rne(x):
    """Round float32 ``x`` (``|x| < 2**22``) to the nearest integer, ties to even; result float32."""
    return (x + 12582912.0) - 12582912.0


@triton.jit
def round_half_away(x):
    """Round float32 ``x`` (``|x| < 2**22``) to the nearest integer, ties away from zero; result float32."""
    t = x.to(tl.int32).to(tl.float32)  # float -> int conversion truncates toward zero
    frac = x - t  # exact: both are float32 with the same exponent range
    step = tl.where(x < 0, -1.0, 1.0)
    return tl.where(tl.abs(frac) >= 0.5, t + step, t)


@triton.jit
def clamp(x, lo, hi):
    return tl.minimum(tl.maximum(x, lo), hi)


@triton.jit
def e4m3(v):
    """Nearest float8 e4m3fn value (ties to even) of float32 ``v`` with ``|v| <= 448``, as float32."""
    bits = v.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 127
    e = tl.maximum(e, -6) - 3
    spacing = ((e + 127) << 23).to(tl.float32, bitcast=True)
    inv = ((127 - e) << 23).to(tl.float32, bitcast=True)
    r = rne(tl.abs(v) * inv) * spacing
    sign = bits & -2147483648
    return (r.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def int_code(w, scale, qmin, qmax):
    """Symmetric integer code ``clip(rint(w / scale), qmin, qmax)`` (float32 in, float32 out)."""
    return rne(clamp(tl.math.div_rn(w, scale), qmin, qmax))


@triton.jit
def fp8_code(w, scale):
    """FP8 code value ``e4m3(clip(w / scale, -448, 448))`` as float32."""
    return e4m3(clamp(tl.math.div_rn(w, scale), -448.0, 448.0))


__all__ = ["rne", "round_half_away", "clamp", "e4m3", "int_code", "fp8_code", "_MAGIC"]
