"""pack on the device: quantize a float weight with given QParams into dsq's canonical layout, bit for bit.

Codes (dsq.schemes; float32, correctly rounded division, round half to even):
    symmetric int:  q = clip(rint(w / scale), qmin, qmax)
    asymmetric int: q = clip(rint(w / scale + zp), qmin, qmax)
    two-level:      q8 = clip(rint(w / s1), -119, 119), q4 = rint(q8 / s2)
    fp8 block:      q = e4m3(clip(w / scale, -448, 448))
Canonical layout (dsq.qtypes.PackedWeight): b-bit codes plus 2**(b-1), element i of a row in bits
(i % (32/b)) * b of int32 word i // (32/b); padding codes 0. Zero points: int4 + 8, packed 8 per int32 along N.

One Triton program quantizes a [BLOCK_R, BLOCK_W * 32/b] tile and folds each run of 32/b codes into a word
by summing disjoint shifted bit fields (a sum of disjoint fields is their OR; int32 wrap-around is harmless).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight, QParams
from dsq.schemes import Granularity, QType, QuantScheme
from dsq_cuda.numerics import clamp, fp8_code, int_code, rne


@triton.jit
def _pack_int_kernel(w_ptr, s_ptr, zp_ptr, s2_ptr, out_ptr, R, K, G, NG, NW, stride_r, qmin, qmax,
                     BITS: tl.constexpr, PACKED: tl.constexpr, ASYM: tl.constexpr, TWO_LEVEL: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS if PACKED else 1
    pid_r = tl.program_id(0)
    pid_w = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_w * BLOCK_W * EPW + tl.arange(0, BLOCK_W * EPW)
    rmask = rows < R
    m = rmask[:, None] & (cols[None, :] < K)
    r64 = rows[:, None].to(tl.int64)
    w = tl.load(w_ptr + r64 * stride_r + cols[None, :], mask=m, other=0.0).to(tl.float32)
    if TWO_LEVEL:
        s1 = tl.load(s_ptr + rows, mask=rmask, other=1.0)
        s2 = tl.load(s2_ptr + r64 * NG + cols[None, :] // G, mask=m, other=1).to(tl.float32)
        q8 = int_code(w, s1[:, None], -119.0, 119.0)
        q = rne(tl.math.div_rn(q8, s2))
    else:
        sidx = r64 * NG + cols[None, :] // G
        s = tl.load(s_ptr + sidx, mask=m, other=1.0)
        if ASYM:
            zp = tl.load(zp_ptr + sidx, mask=m, other=0).to(tl.float32)
            q = rne(clamp(tl.math.div_rn(w, s) + zp, qmin, qmax))
        else:
            q = int_code(w, s, qmin, qmax)
    qi = q.to(tl.int32)
    if PACKED:
        u = tl.where(m, qi + (1 << (BITS - 1)), 0)
        shift = (cols % EPW) * BITS
        fields = tl.reshape(u << shift[None, :], [BLOCK_R, BLOCK_W, EPW])
        words = tl.sum(fields, axis=2)
        wcols = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
        wm = rmask[:, None] & (wcols[None, :] < NW)
        tl.store(out_ptr + r64 * NW + wcols[None, :], words, mask=wm)
    else:
        tl.store(out_ptr + r64 * K + cols[None, :], qi.to(tl.int8), mask=m)


@triton.jit
def _pack_fp8_block_kernel(w_ptr, s_ptr, out_ptr, R, N, K, NBN, NBK, bn, bk, stride_r,
                           BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    m = (rows[:, None] < R) & (cols[None, :] < K)
    r64 = rows[:, None].to(tl.int64)
    w = tl.load(w_ptr + r64 * stride_r + cols[None, :], mask=m, other=0.0).to(tl.float32)
    b = rows // N
    n = rows % N
    sidx = (b[:, None] * NBN + n[:, None] // bn) * NBK + cols[None, :] // bk
    s = tl.load(s_ptr + sidx, mask=m, other=1.0)
    q = fp8_code(w, s)
    tl.store(out_ptr + r64 * K + cols[None, :], q.to(out_ptr.dtype.element_ty), mask=m)


def _expect(t: torch.Tensor | None, name: str, shape: tuple[int, ...], scheme: QuantScheme) -> torch.Tensor:
    if t is None:
        raise QuantInputError(f"qparams.{name} is missing; scheme {scheme.name} needs it (run calibrate first)")
    if tuple(t.shape) != tuple(shape):
        raise QuantInputError(f"qparams.{name} has shape {tuple(t.shape)}; expected {tuple(shape)} for "
                              f"scheme {scheme.name}")
    return t


def pack_zero_points(zp: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 zero points [..., N, G] of b-bit codes -> int32 [..., ceil(N b / 32), G]: value + 2**(b-1), 32 / b per
    word along N, the first row in the lowest bits (int4: 8 a word)."""
    *lead, n, g = zp.shape
    per = 32 // bits
    pad = (-n) % per
    u = zp.to(torch.int64) + (1 << (bits - 1))
    if pad:  # padding rows hold zero bits, as the reference packs them
        u = torch.cat([u, torch.zeros((*lead, pad, g), dtype=torch.int64, device=zp.device)], dim=-2)
    u = u.reshape(*lead, (n + pad) // per, per, g)
    shifts = (torch.arange(per, device=zp.device, dtype=torch.int64) * bits).reshape(per, 1)
    words = (u << shifts).sum(dim=-2)  # disjoint fields: the sum is their OR, < 2**32
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _int_codes(w2: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None, s2: torch.Tensor | None,
               group: int, bits: int, packed: bool, qt: QType) -> torch.Tensor:
    r, k = w2.shape
    ng = scale.shape[-1] if s2 is None else s2.shape[-1]
    epw = 32 // bits if packed else 1
    nw = -(-k // epw)
    out = torch.empty((r, nw), dtype=torch.int32 if packed else torch.int8, device=w2.device)
    block_r = 16
    block_w = max(1, 512 // epw) if packed else 256
    s = scale.reshape(r, -1).float().contiguous()
    zp_arg = zp.reshape(r, -1).contiguous() if zp is not None else s
    s2_arg = s2.reshape(r, -1).contiguous() if s2 is not None else s
    grid = (triton.cdiv(r, block_r), triton.cdiv(nw, block_w))
    _pack_int_kernel[grid](w2, s, zp_arg, s2_arg, out, r, k, group, ng, nw, w2.stride(0),
                           float(qt.qmin), float(qt.qmax), BITS=bits, PACKED=packed, ASYM=zp is not None,
                           TWO_LEVEL=s2 is not None, BLOCK_R=block_r, BLOCK_W=block_w)
    return out


def pack(weight: torch.Tensor, qp: QParams, scheme: QuantScheme) -> PackedWeight:
    """Canonical PackedWeight of ``weight`` ([N, K] or [E, N, K], on the kernel device)."""
    lead, (n, k) = tuple(weight.shape[:-2]), tuple(weight.shape[-2:])
    w3 = weight.reshape((-1, n, k)).contiguous()
    w2 = w3.reshape(-1, k)
    dev = weight.device
    scale = _expect(qp.weight_scale, "weight_scale", lead + scheme.scale_shape(n, k), scheme).to(dev)
    tensors: dict[str, torch.Tensor] = {}
    qt = scheme.weight_dtype
    if scheme.weight_granularity is Granularity.BLOCK:
        bn, bk = scheme.block_size
        nbn, nbk = scale.shape[-2:]
        out = torch.empty((w2.shape[0], k), dtype=torch.float8_e4m3fn, device=dev)
        grid = (triton.cdiv(w2.shape[0], 16), triton.cdiv(k, 256))
        _pack_fp8_block_kernel[grid](w2, scale.float().contiguous(), out, w2.shape[0], n, k, nbn, nbk, bn, bk,
                                     w2.stride(0), BLOCK_R=16, BLOCK_K=256)
        tensors["weight"] = out.reshape(lead + (n, k))
    else:
        group = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
        zp = s2 = None
        if not scheme.weight_symmetric:
            zp = _expect(qp.weight_zero_point, "weight_zero_point", tuple(scale.shape), scheme).to(dev)
        if scheme.two_level:
            group = scheme.group_size
            s2 = _expect(qp.weight_group_scale, "weight_group_scale",
                         lead + (n, -(-k // group)), scheme).to(dev)
        packed = scheme.weight_only or qt is QType.INT4  # W8A8 keeps a plain int8 [N, K] weight
        codes = _int_codes(w2, scale, zp, s2, group, qt.bits, packed, qt)
        tensors["weight_packed" if packed else "weight"] = codes.reshape(lead + (n, codes.shape[-1]))
        if zp is not None:
            tensors["weight_zero_point"] = pack_zero_points(zp, qt.bits)
        if s2 is not None:
            tensors["weight_group_scale"] = s2
    tensors["weight_scale"] = scale
    if scheme.static_activations:
        tensors["input_scale"] = _expect(qp.input_scale, "input_scale", lead + (1,), scheme).to(dev)
        if not scheme.act_symmetric:
            tensors["input_zero_point"] = _expect(qp.input_zero_point, "input_zero_point", lead + (1,),
                                                  scheme).to(dev)
    tensors["weight_shape"] = torch.tensor([n, k], dtype=torch.int64, device=dev)
    return PackedWeight(scheme=scheme.name, shape=tuple(weight.shape), tensors=tensors)
