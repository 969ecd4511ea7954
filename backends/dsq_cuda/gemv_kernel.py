"""Decode kernel for weight-only packed schemes (W4A16, W4A16_ASYM, W8A16) at small M: no tensor cores.

At a few tokens the GEMM reads each weight byte once and does 2*M flops per weight: it is bound by memory
and by the instructions spent decoding codes, so this kernel minimises those:

* no unpack-and-reshape: word ``c`` of a row holds elements ``8c + j`` (int4; ``4c + j`` for int8), so the
  j-th bit field of every word in a tile multiplies the x columns ``k0 + EPW * c + j``: x (tiny, L1/L2
  resident) is gathered with stride EPW instead of shuffling the weights;
* codes become floats with one OR and one subtraction: ``(u | 0x4B000000)`` read as float32 is exactly
  ``2**23 + u``, so subtracting ``2**23 + 2**(b-1) + zp`` gives the signed code ``q - zp`` exactly;
* products ``x * (q - zp)`` are exact in float32 and accumulate in float32 per scale group, then one multiply
  by the group's scale (channel scales: once in the epilogue), as the exact math prescribes.
SPLIT_K > 1 spreads K over programs that add float32 partials atomically into a zeroed buffer.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gemv_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, M, N, K, NW, NG, stride_xm, stride_om,
                G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_W: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS
    BLOCK_K: tl.constexpr = BLOCK_W * EPW
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_W)
    mmask = offs_m < M
    nmask = offs_n < N
    m64 = offs_m[:, None].to(tl.int64)
    w_rows = w_ptr + offs_n[:, None].to(tl.int64) * NW
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    n_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(n_tiles, SPLIT_K)
    t_lo = pid_k * per_split
    t_hi = tl.minimum(t_lo + per_split, n_tiles)
    for t in range(t_lo, t_hi):
        k0 = t * BLOCK_K
        wcols = t * BLOCK_W + offs_c
        words = tl.load(w_rows + wcols[None, :], mask=nmask[:, None] & (wcols[None, :] < NW), other=0)
        bias_c = 8388608.0 + (1 << (BITS - 1))  # 2**23 + code offset
        if ASYM:
            zp = tl.load(wz_ptr + offs_n * NG + k0 // G, mask=nmask, other=0).to(tl.float32)
            sub = (bias_c + zp)[:, None]
        else:
            sub = bias_c
        part = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_W], dtype=tl.float32)
        for j in tl.static_range(EPW):
            u = ((words >> (j * BITS)) & ((1 << BITS) - 1)) | 0x4B000000
            q = u.to(tl.float32, bitcast=True) - sub  # exact signed code (minus zero point)
            kk = k0 + offs_c * EPW + j
            xj = tl.load(x_ptr + m64 * stride_xm + kk[None, :], mask=mmask[:, None] & (kk[None, :] < K),
                         other=0.0).to(tl.float32)
            part += xj[:, None, :] * q[None, :, :]
        red = tl.sum(part, axis=2)
        if GROUP_SCALE:
            s = tl.load(ws_ptr + offs_n * NG + k0 // G, mask=nmask, other=0.0)
            acc += red * s[None, :]
        else:
            acc += red
    if GROUP_SCALE:
        y = acc
    else:
        s = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        y = acc * s[None, :]
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b[None, :]
    optr = out_ptr + m64 * stride_om + offs_n[None, :]
    omask = mmask[:, None] & nmask[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=omask)
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=omask)
