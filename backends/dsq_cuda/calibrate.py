"""calibrate on the device: per-channel/group/block statistics and scales, bit-identical to the reference.

Math (dsq.schemes docstring; all float32, divisions correctly rounded):
    symmetric int / fp8:  scale = max(amax / D, tiny)            (D = 7.5, 127.5, 7, 127, 448 or 119)
    asymmetric int:       lo = min(min w, 0), hi = max(max w, 0), scale = max((hi - lo) / (qmax - qmin), tiny),
                          zp = clip(rint(qmin - lo / scale), qmin, qmax)
    two-level level 2:    s2 = max(1, ceil(max|q8| / 7)), q8 = clip(rint(w / s1), -119, 119)
    static activations:   the asymmetric rule over the calibration range (min_val, max_val) -> input_scale, zp.
``tiny`` is the smallest normal number of ``scheme.scale_dtype``; scales are rounded to that dtype (round half
to even, torch's cast) before they are used to compute zero points or codes.

The reductions run in Triton: one program reduces BLOCK_R rows over one group (or channel, or 128x128 block),
walking K in BLOCK_K chunks so a whole channel of 18432 inputs never has to sit in registers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq.errors import QuantInputError
from dsq.qtypes import ActStats, QParams
from dsq.schemes import Granularity, QType, QuantScheme
from dsq_cuda.numerics import clamp, rne

MODE_ABSMAX, MODE_MINMAX, MODE_Q8MAX = 0, 1, 2


@triton.jit
def _group_stats_kernel(w_ptr, s1_ptr, out_a_ptr, out_b_ptr, R, K, G, NG, stride_r,
                        D, tiny, MODE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Reduce rows [pid0*BLOCK_R, +BLOCK_R) over columns of group pid1 ([g*G, min(g*G+G, K))).

    MODE_ABSMAX: out_a = max(amax / D, tiny).  MODE_MINMAX: out_a = max((hi - lo) / D, tiny), out_b = lo.
    MODE_Q8MAX: out_a = max(1, ceil(max|clip(rint(w / s1), -119, 119)| / 7)) (integer group scale).
    """
    pid_r = tl.program_id(0)
    g = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    k_lo = g * G
    k_hi = tl.minimum(k_lo + G, K)
    # element-wise running extrema, reduced once after the loop (reducing inside the loop trips a Triton
    # 3.6 pass, OptimizeThreadLocality, when two reductions share one loaded tile)
    amax = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
    lo = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
    hi = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
    if MODE == 2:
        s1 = tl.load(s1_ptr + rows, mask=rmask, other=1.0)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (cols[None, :] < k_hi)
        w = tl.load(w_ptr + rows[:, None].to(tl.int64) * stride_r + cols[None, :], mask=m, other=0.0)
        w = w.to(tl.float32)
        if MODE == 0:
            amax = tl.maximum(amax, tl.abs(w))
        elif MODE == 1:
            # masked lanes read 0, which min(., 0) / max(., 0) absorb anyway
            lo = tl.minimum(lo, w)
            hi = tl.maximum(hi, w)
        else:
            q8 = rne(clamp(tl.math.div_rn(w, s1[:, None]), -119.0, 119.0))
            amax = tl.maximum(amax, tl.abs(q8))
    out = rows * NG + g
    if MODE == 0:
        a = tl.max(amax, axis=1)
        tl.store(out_a_ptr + out, tl.maximum(tl.math.div_rn(a, D), tiny), mask=rmask)
    elif MODE == 1:
        lo1 = tl.min(lo, axis=1)
        hi1 = tl.max(hi, axis=1)
        tl.store(out_a_ptr + out, tl.maximum(tl.math.div_rn(hi1 - lo1, D), tiny), mask=rmask)
        tl.store(out_b_ptr + out, lo1, mask=rmask)
    else:
        m8 = tl.max(amax, axis=1).to(tl.int32)
        s2 = tl.maximum((m8 + 6) // 7, 1)
        tl.store(out_a_ptr + out, s2.to(out_a_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _block_absmax_kernel(w_ptr, out_ptr, N, K, NBN, NBK, stride_b, stride_n, bk, D, tiny,
                         BN: tl.constexpr, BK: tl.constexpr, CHUNK: tl.constexpr):
    """scale[b, i, j] = max(amax(w[b, i*BN:(i+1)*BN, j*BK:(j+1)*BK]) / D, tiny); edge blocks are short."""
    b = tl.program_id(0)
    i = tl.program_id(1)
    j = tl.program_id(2)
    cols = j * bk + tl.arange(0, BK)
    col_ok = (cols < K) & (cols < j * bk + bk)
    amax = tl.zeros([BK], dtype=tl.float32)
    for r0 in range(0, BN, CHUNK):
        rows = i * BN + r0 + tl.arange(0, CHUNK)
        m = (rows[:, None] < N) & (rows[:, None] < i * BN + BN) & col_ok[None, :]
        ptr = w_ptr + b.to(tl.int64) * stride_b + rows[:, None].to(tl.int64) * stride_n + cols[None, :]
        w = tl.load(ptr, mask=m, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(w), axis=0))
    a = tl.max(amax, axis=0)
    tl.store(out_ptr + (b * NBN + i) * NBK + j, tl.maximum(tl.math.div_rn(a, D), tiny))


def _pow2(n: int, lo: int = 16, hi: int = 1024) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def tiny_of(dtype: torch.dtype) -> float:
    """Smallest normal number of a scale dtype (the floor that keeps scales nonzero)."""
    return float(torch.finfo(dtype).tiny)


def scale_dtype(scheme: QuantScheme) -> torch.dtype:
    return getattr(torch, scheme.scale_dtype)


def group_stats(w2: torch.Tensor, group: int, mode: int, divisor: float, tiny: float,
                s1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the group reduction over a contiguous [R, K] weight; returns ([R, G] out_a, [R, G] out_b or None)."""
    r, k = w2.shape
    ng = -(-k // group)
    out_a = torch.empty((r, ng), dtype=torch.int32 if mode == MODE_Q8MAX else torch.float32, device=w2.device)
    out_b = torch.empty((r, ng), dtype=torch.float32, device=w2.device) if mode == MODE_MINMAX else out_a
    block_r = 16
    block_k = _pow2(group, 32, 256)
    s1_arg = s1 if s1 is not None else out_a
    grid = (triton.cdiv(r, block_r), ng)
    _group_stats_kernel[grid](w2, s1_arg, out_a, out_b, r, k, group, ng, w2.stride(0), float(divisor), tiny,
                              MODE=mode, BLOCK_R=block_r, BLOCK_K=block_k)
    return out_a, (out_b if mode == MODE_MINMAX else None)


def block_scales(w3: torch.Tensor, block: tuple[int, int], divisor: float, tiny: float) -> torch.Tensor:
    """[B, ceil(N/bn), ceil(K/bk)] float32 block scales of a contiguous [B, N, K] weight."""
    b, n, k = w3.shape
    bn, bk = block
    nbn, nbk = -(-n // bn), -(-k // bk)
    out = torch.empty((b, nbn, nbk), dtype=torch.float32, device=w3.device)
    bk_p2 = triton.next_power_of_2(bk)
    chunk = min(triton.next_power_of_2(bn), max(1, 4096 // bk_p2))
    _block_absmax_kernel[(b, nbn, nbk)](w3, out, n, k, nbn, nbk, w3.stride(0), w3.stride(1), bk, float(divisor), tiny,
                                        BN=bn, BK=bk_p2, CHUNK=chunk)
    return out


def static_act_qparams(act_stats, lead: tuple[int, ...], scheme: QuantScheme,
                       device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """input_scale float32 and input_zero_point int8 (shape lead + (1,)) from the calibration range.

    ``act_stats`` is one dsq.ActStats, or a list with one per stacked weight. A handful of scalars, so plain
    torch float32 ops on the host (IEEE division, round half to even). Symmetric static activations use
    ``scale = max(max(|lo|, |hi|) / 127, tiny)`` and no zero point.
    """
    n_stats = lead[0] if lead else 1
    stats = list(act_stats) if isinstance(act_stats, (list, tuple)) else [act_stats] * n_stats
    if len(stats) != n_stats or not all(isinstance(s, ActStats) for s in stats):
        raise QuantInputError(f"act_stats must be a dsq.ActStats (or a list of {n_stats}, one per stacked weight); "
                              f"got {type(act_stats).__name__}")
    f32 = torch.float32
    lo = torch.tensor([s.min_val for s in stats], dtype=f32).clamp(max=0.0)
    hi = torch.tensor([s.max_val for s in stats], dtype=f32).clamp(min=0.0)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise QuantInputError(f"act_stats are not finite (no calibration data seen?): min={lo.tolist()[:4]}, "
                              f"max={hi.tolist()[:4]}")
    tiny = tiny_of(f32)
    shape = tuple(lead) + (1,)
    if scheme.act_symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / torch.tensor(127.0, dtype=f32), min=tiny)
        return scale.reshape(shape).to(device), None
    scale = torch.clamp((hi - lo) / torch.tensor(255.0, dtype=f32), min=tiny)
    zp = torch.clamp(torch.round(torch.tensor(-128.0, dtype=f32) - lo / scale), -128, 127)
    return scale.reshape(shape).to(device), zp.to(torch.int8).reshape(shape).to(device)


def calibrate(weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
    """QParams for ``weight`` ([N, K] or [E, N, K], on the kernel device) under ``scheme``."""
    lead, (n, k) = tuple(weight.shape[:-2]), tuple(weight.shape[-2:])
    w3 = weight.reshape((-1, n, k)).contiguous()
    w2 = w3.reshape(-1, k)
    sdt = scale_dtype(scheme)
    tiny = tiny_of(sdt)
    zp = gs = None
    if scheme.weight_granularity is Granularity.BLOCK:
        scale = block_scales(w3, scheme.block_size, scheme.weight_divisor(), tiny).to(sdt)
    elif scheme.two_level:
        s1, _ = group_stats(w2, k, MODE_ABSMAX, scheme.weight_divisor(), tiny)
        scale = s1.to(sdt)
        s2, _ = group_stats(w2, scheme.group_size, MODE_Q8MAX, 0.0, tiny, s1=scale.float().contiguous())
        gs = s2.to(torch.int8)
    else:
        group = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
        if scheme.weight_symmetric:
            s, _ = group_stats(w2, group, MODE_ABSMAX, scheme.weight_divisor(), tiny)
            scale = s.to(sdt)
        else:
            qt: QType = scheme.weight_dtype
            s, lo = group_stats(w2, group, MODE_MINMAX, float(qt.qmax - qt.qmin), tiny)
            scale = s.to(sdt)
            zp = torch.clamp(torch.round(qt.qmin - lo / scale.float()), qt.qmin, qt.qmax).to(torch.int8)
    if not torch.isfinite(scale).all():
        raise QuantInputError(f"weight scale overflows {scheme.scale_dtype} (largest "
                              f"{float(scale.float().max()):.4g}); use a wider scale_dtype for weights this large")
    shape = lead + scheme.scale_shape(n, k)
    qp = QParams(weight_scale=scale.reshape(shape),
                 weight_zero_point=None if zp is None else zp.reshape(shape),
                 weight_group_scale=None if gs is None else gs.reshape(lead + (n, gs.shape[-1])))
    if scheme.static_activations:
        if act_stats is None:
            raise QuantInputError(f"scheme {scheme.name} has static activation scales: calibrate needs act_stats "
                                  "(a dsq.ActStats with the observed activation min/max)")
        qp.input_scale, qp.input_zero_point = static_act_qparams(act_stats, lead, scheme, weight.device)
    return qp
