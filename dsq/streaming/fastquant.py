"""Vectorised torch calibrate + pack for the data-free schemes, bit-identical to the numpy reference.

The numpy oracle (``dsq_cpu_reference``) widens to float64 and allocates several full-size temporaries per
weight; streaming a 671B checkpoint through it on a CPU would take days. :class:`FastQuantizer` computes the
same bits with float32 torch operations on row chunks, writing into reusable work buffers (allocating fresh
multi-megabyte tensors per operation costs more in page faults than the arithmetic itself).
tests/streaming/test_streaming_fastquant.py compares every supported scheme with the reference, including
ties, subnormal fp8 codes, all-zero groups and short edge groups. Why each step is exact (notation of
dsq/schemes.py; ``/`` is IEEE float32 division, correctly rounded on every torch CPU build, as the
reference's ``safe_div``):

* symmetric int: ``s = max(amax / D, tiny)`` rounded to ``scale_dtype`` by torch's cast (round half to
  even, as the reference's bit-level rounding), ``q = clip(round(w / s))`` with ``torch.round`` = half to even.
* two-level: ``q8 = clip(round(w / s1), -119, 119)``, ``s2 = max(1, ceil(max|q8| / 7))`` in integers,
  ``q4 = clip(round(q8 / s2))``; the reference divides in float64, here in float32: both quotients of these
  small integers are within 2^-20 of the true value while a non-tie quotient is at least 1/34 from a tie, and
  ties (exact halves) are exact in both, so the rounded codes agree.
* fp8: ``e4m3(clip(w / s, -448, 448))`` by torch's float32 -> float8_e4m3fn cast, which rounds to nearest,
  ties to even, keeps the sign of zero and handles subnormals like the reference's explicit formula.
* asymmetric int: ``zp = clip(round(qmin - lo / s))``, ``q = clip(round(w / s + zp))``, the sum in float32.

Packing builds the canonical words directly: biased codes ``u = q + 2^(b-1)`` (small integers, exact in
float32) are paired as ``u[2j] + 16 * u[2j+1]`` (element ``2j`` in the low nibble of byte ``j``) and four bytes
read as one little-endian int32, which puts element ``i`` in bits ``b*i`` exactly as
:func:`dsq.checkpoint.bits.pack_words` does; padding codes are ``u = 0``.
"""

from __future__ import annotations

import sys

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight, weight_tensor_name
from dsq.schemes import Granularity, QType, QuantScheme

__all__ = ["fast_supported", "FastQuantizer", "quantize_rows", "pack_codes_fast", "concat_rows"]

_SCALE_DT = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TINY = {"float32": 2.0**-126, "bfloat16": 2.0**-126, "float16": 2.0**-14}
_TWO_LEVEL_RANGE = 119.0
_F32 = torch.float32


def fast_supported(scheme: QuantScheme) -> bool:
    """Whether the fast path handles ``scheme`` (every data-free weight layout dsq has)."""
    if scheme.static_activations or sys.byteorder != "little":
        return False
    if scheme.weight_dtype is QType.FP8_E4M3:
        return scheme.weight_granularity is Granularity.BLOCK
    return True


def _as_int32(u8: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8 [R, 4W] read as little-endian int32 [R, W]."""
    r = u8.shape[0]
    return u8.reshape(-1).view(torch.int32).view(r, -1)


def pack_codes_fast(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes int8 ``[R, K]`` -> canonical int32 words ``[R, ceil(K*bits/32)]`` (padding codes u = 0)."""
    r, k = q.shape
    per = 32 // bits
    kw = -(-k // per) * per
    u = torch.zeros(r, kw, dtype=torch.uint8)
    u[:, :k] = (q.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    if bits == 4:
        u = u[:, 0::2] | (u[:, 1::2] << 4)  # element 2j in the low nibble of byte j
    return _as_int32(u.contiguous())


class FastQuantizer:
    """The fast kernels plus the work buffers they reuse from call to call (one instance per thread)."""

    def __init__(self):
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def buf(self, key: str, shape: tuple[int, ...], dtype: torch.dtype = _F32) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        b = self._bufs.get((key, dtype))
        if b is None or b.numel() < n:
            b = self._bufs[(key, dtype)] = torch.empty(n, dtype=dtype)
        return b[:n].view(shape)

    # -- shared steps -----------------------------------------------------------------------------------
    def _padded(self, w: torch.Tensor, kp: int) -> torch.Tensor:
        """``w`` [R, K] zero-padded to [R, kp] in a work buffer (zeros never change amax; min/max clip at 0)."""
        r, k = w.shape
        if kp == k:
            return w
        p = self.buf("pad", (r, kp))
        p[:, :k] = w
        p[:, k:] = 0.0
        return p

    @staticmethod
    def _scale(amax: torch.Tensor, divisor: float, scheme: QuantScheme, name: str) -> torch.Tensor:
        if not torch.isfinite(amax).all():  # amax propagates NaN and keeps Inf: one check on the small tensor
            raise QuantInputError(f"{name} has NaN or Inf values; quantization needs finite weights")
        s = torch.clamp(amax / torch.tensor(divisor, dtype=_F32), min=_TINY[scheme.scale_dtype])
        out = s.to(_SCALE_DT[scheme.scale_dtype])
        if not torch.isfinite(out).all():
            raise QuantInputError(f"{name}: weight scale overflows {scheme.scale_dtype} (largest "
                                  f"{float(s.max()):.4g}); use a wider scale_dtype for weights this large")
        return out

    def _pack(self, u: torch.Tensor, k: int, bits: int) -> torch.Tensor:
        """Biased codes (float32 holding 0..2^b-1) [R, >=K] -> canonical int32 words [R, ceil(K*b/32)]."""
        r = u.shape[0]
        per = 32 // bits
        kw = -(-k // per) * per
        if kw != k or u.shape[1] < kw:
            src = self.buf("packsrc", (r, kw))
            src[:, :k] = u[:, :k]
            src[:, k:] = 0.0  # padding codes are u = 0
        else:
            src = u[:, :kw]
        out = torch.empty(r, kw // (8 // bits), dtype=torch.uint8)
        if bits == 4:
            pairs = src.unflatten(1, (kw // 2, 2))
            h = self.buf("pairs", (r, kw // 2))
            torch.add(pairs[..., 0], pairs[..., 1], alpha=16.0, out=h)  # u[2j] + 16 u[2j+1]: exact, < 256
            out.copy_(h)
        else:
            out.copy_(src)
        return _as_int32(out)

    def _codes_out(self, a: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
        q = torch.empty(a.shape[0], k, dtype=dtype)
        q.copy_(a[:, :k])
        return q

    # -- float8 source weights ----------------------------------------------------------------------------
    def dequant_fp8(self, w8: torch.Tensor, s: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        """``float32(q) * s[n // bn, k // bk]`` of a float8 e4m3fn chunk [R, K] (R a multiple of bn, or the
        last chunk), into a work buffer; bit-identical to ``w8.to(float32) * expanded_scale``.

        torch's scalar fp8 -> float32 conversion is slow, so the bits are moved instead: byte ``b`` =
        sign | exponent(4) | mantissa(3); ``(b & 0x7F) << 20`` as a float32 is ``q * 2^-120`` exactly (exponent
        bias 127 instead of 7; e4m3 subnormals land on float32 subnormals with the same scaling) and the sign
        bit moves to bit 31. Multiplying by ``s * 2^120`` (exact: a power-of-two scaling) then rounds the exact
        product ``q * s`` once, as the float32 product ``float32(q) * s`` does. NaN codes (0x7F/0xFF) are refused.
        """
        r, k = w8.shape
        bn, bk = block
        u = w8.view(torch.uint8)
        low = self.buf("u8", (r, k), torch.uint8)
        torch.bitwise_and(u, 0x7F, out=low)
        if low.numel() and int(low.max()) == 0x7F:
            raise QuantInputError("float8 weight contains NaN codes (0x7F/0xFF)")
        if s.numel() and float(s.abs().max()) >= 2.0**7:  # s * 2^120 could overflow: plain conversion
            out = self.buf("w", (r, k))
            out.copy_(w8)
            return out.mul_(_expand(s, r, k, block))
        bits = self.buf("w", (r, k), torch.int32)
        sign = self.buf("sign", (r, k), torch.int32)
        sign.copy_(u.view(torch.int8))  # sign-extends: negative codes set bit 31
        sign.bitwise_and_(-(2**31))
        bits.copy_(low)
        bits.bitwise_left_shift_(20).bitwise_or_(sign)
        f = bits.view(_F32)
        s2 = s.to(_F32) * (2.0**120)
        if r % bn == 0 and k % bk == 0 or (r <= bn and k % bk == 0):
            rows = min(r, bn)
            f.view(r // rows, rows, k // bk, bk).mul_(s2[:, None, :, None])
        else:
            f.mul_(_expand(s2, r, k, block))
        return f

    # -- schemes ----------------------------------------------------------------------------------------
    def _symmetric_int(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
        r, k = w.shape
        qt = scheme.weight_dtype
        g = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
        kp = -(-k // g) * g
        wg = self._padded(w, kp).view(r, kp // g, g)
        a = self.buf("a", (r, kp // g, g))
        torch.abs(wg, out=a)
        s = self._scale(a.amax(dim=-1), scheme.weight_divisor(), scheme, name)
        torch.div(wg, s.to(_F32).unsqueeze(-1), out=a)
        a.round_().clamp_(qt.qmin, qt.qmax)
        a = a.view(r, kp)
        if weight_tensor_name(scheme) == "weight_packed":
            return {"packed": self._pack(a.add_(-qt.qmin), k, qt.bits), "weight_scale": s}
        return {"codes": self._codes_out(a, k, torch.int8), "weight_scale": s}

    def _asymmetric_int(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
        r, k = w.shape
        qt = scheme.weight_dtype
        g = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
        kp = -(-k // g) * g
        wg = self._padded(w, kp).view(r, kp // g, g)
        lo = wg.amin(dim=-1).clamp_(max=0.0)
        hi = wg.amax(dim=-1).clamp_(min=0.0)
        s = self._scale(hi - lo, float(qt.qmax - qt.qmin), scheme, name)
        s32 = s.to(_F32)
        zp = torch.round(torch.tensor(float(qt.qmin)) - lo / s32).clamp_(qt.qmin, qt.qmax)
        a = self.buf("a", (r, kp // g, g))
        torch.div(wg, s32.unsqueeze(-1), out=a)
        a.add_(zp.unsqueeze(-1)).round_().clamp_(qt.qmin, qt.qmax)
        a = a.view(r, kp)
        zp_words = pack_codes_fast(zp.to(torch.int8).t().contiguous(), qt.bits).t().contiguous()
        if weight_tensor_name(scheme) != "weight_packed":
            return {"codes": self._codes_out(a, k, torch.int8), "weight_scale": s, "zero_point": zp_words}
        return {"packed": self._pack(a.add_(-qt.qmin), k, qt.bits), "weight_scale": s, "zero_point": zp_words}

    def _two_level_core(self, w: torch.Tensor, scheme: QuantScheme, name: str):
        """(q4 as float32 in a work buffer [R, Kp], zero past K; s1 [R, 1] in the scale dtype; s2 int32 [R, G]).

        ``max |q8|`` per group is taken as ``clamp(round(max|w| / s1), 0, 119)`` from the group amax of ``|w|``
        instead of a second pass over ``|q8|``: IEEE division by ``s1 > 0``, round-half-to-even and the clamp
        are all monotone and odd (``fl(-x / s) = -fl(x / s)``, ``round(-x) = -round(x)``), so they commute with
        ``max |.|`` and give the same integer. The row amax for ``s1`` is the max of the group amaxes (zero
        padding changes neither).
        """
        r, k = w.shape
        g = scheme.group_size
        kp = -(-k // g) * g
        a = self.buf("a", (r, kp))
        torch.abs(w, out=a[:, :k])
        a[:, k:] = 0.0
        gmax = a.view(r, kp // g, g).amax(dim=-1)  # [R, G]; NaN propagates into the row amax
        s1 = self._scale(gmax.amax(dim=-1, keepdim=True), _TWO_LEVEL_RANGE, scheme, name)
        s1f = s1.to(_F32)
        amax8 = gmax.div_(s1f).round_().clamp_(max=_TWO_LEVEL_RANGE).to(torch.int32)
        s2 = torch.clamp((amax8 + 6) // 7, min=1)  # ceil(amax8 / 7), at least 1
        torch.div(w, s1f, out=a[:, :k])
        a[:, :k].round_().clamp_(-_TWO_LEVEL_RANGE, _TWO_LEVEL_RANGE)  # q8 (padding stays 0)
        ag = a.view(r, kp // g, g)
        ag.div_(s2.to(_F32).unsqueeze(-1)).round_().clamp_(-8, 7)  # q4
        return a, s1, s2

    def _two_level(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
        q4, s1, s2 = self._two_level_core(w, scheme, name)
        return {"packed": self._pack(q4.add_(8), w.shape[1], 4), "weight_scale": s1,
                "group_scale": s2.to(torch.int8)}

    def two_level_codes(self, w: torch.Tensor, scheme: QuantScheme, name: str,
                        out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-level quantization of a float32 chunk [R, K] without packing: the int4 codes ``q4`` (-8..7) go
        into ``out`` (int8 [R, K]); returns ``(s1 [R, 1], s2 int8 [R, ceil(K/g)])``. Same codes and scales as
        :meth:`quantize` (whose ``weight_packed`` is these codes packed)."""
        if not (scheme.two_level and fast_supported(scheme)):
            raise QuantInputError(f"{name}: {scheme.name} is not a two-level scheme the fast path handles")
        q4, s1, s2 = self._two_level_core(w, scheme, name)
        out.copy_(q4[:, : w.shape[1]])
        return s1, s2.to(torch.int8)

    def _fp8_block(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> dict[str, torch.Tensor]:
        r, k = w.shape
        bn, bk = scheme.block_size
        if r > bn and r % bn:  # full block rows, then the short last block row on its own
            cut = r // bn * bn
            head, tail = self._fp8_block(w[:cut], scheme, name), self._fp8_block(w[cut:], scheme, name)
            return {key: torch.cat([head[key], tail[key]], dim=0) for key in head}
        kp = -(-k // bk) * bk
        rows = min(r, bn)
        wp = self._padded(w, kp).view(r // rows, rows, kp // bk, bk)
        a = self.buf("a", wp.shape)
        torch.abs(wp, out=a)
        s = self._scale(a.amax(dim=(1, 3)), 448.0, scheme, name)
        torch.div(wp, s.to(_F32)[:, None, :, None], out=a)
        a.clamp_(-448.0, 448.0)
        return {"codes": self._codes_out(a.view(r, kp), k, torch.float8_e4m3fn), "weight_scale": s}

    def quantize(self, w: torch.Tensor, scheme: QuantScheme, name: str = "weight") -> PackedWeight:
        """calibrate + pack of a float32 ``[R, K]`` weight (or row chunk) into dsq's canonical PackedWeight.

        Equals ``get_backend("cpu").quantize_weight(w, scheme)`` bit for bit (no activation tensors: data-free
        schemes only). Row chunks concatenated with :func:`concat_rows` equal the whole weight's result when
        chunks start at multiples of the scheme's row unit (block rows for FP8, 8 for packed zero points).
        """
        if not fast_supported(scheme):
            raise QuantInputError(f"{name}: the streaming fast path does not handle {scheme.name}")
        if w.dtype != _F32 or w.ndim != 2:
            raise QuantInputError(f"{name}: the fast path expects a float32 [R, K] tensor, got {w.dtype} "
                                  f"{tuple(w.shape)}")
        r, k = w.shape
        if scheme.weight_dtype is QType.FP8_E4M3:
            parts = self._fp8_block(w, scheme, name)
        elif scheme.two_level:
            parts = self._two_level(w, scheme, name)
        elif scheme.weight_symmetric:
            parts = self._symmetric_int(w, scheme, name)
        else:
            parts = self._asymmetric_int(w, scheme, name)
        t: dict[str, torch.Tensor] = {}
        if "packed" in parts:
            t["weight_packed"] = parts["packed"]
        else:
            t["weight"] = parts["codes"]
        t["weight_scale"] = parts["weight_scale"].reshape(scheme.scale_shape(r, k)).contiguous()
        if "zero_point" in parts:
            t["weight_zero_point"] = parts["zero_point"]
        if "group_scale" in parts:
            t["weight_group_scale"] = parts["group_scale"].contiguous()
        t["weight_shape"] = torch.tensor([r, k], dtype=torch.int64)
        return PackedWeight(scheme.name, (r, k), t)


def _expand(s: torch.Tensor, r: int, k: int, block: tuple[int, int]) -> torch.Tensor:
    """Block scales [ceil(r/bn), ceil(k/bk)] broadcast to [r, k]."""
    return s.to(_F32).repeat_interleave(block[0], dim=0)[:r].repeat_interleave(block[1], dim=1)[:, :k]


def quantize_rows(w: torch.Tensor, scheme: QuantScheme, name: str = "weight") -> PackedWeight:
    """One-off :meth:`FastQuantizer.quantize` (fresh buffers)."""
    return FastQuantizer().quantize(w, scheme, name)


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
