"""Decode kernel for weight-only packed schemes (W4A16, W4A16_ASYM, W8A16) at M = 1..few: no tensor cores.

At a few tokens the GEMM reads each weight byte once and does 2*M flops per weight: it is bound by memory
and by the instructions spent decoding codes, so this kernel minimises those:

* weights in the slab layout of dsq_cuda.slab: field j of a ``[SL, BLOCK_N]`` word tile is the weight slab
  multiplying the contiguous x columns ``k0 + j*SL + [0, SL)``, so a code costs a shift and a mask, and x is
  one contiguous ``[SL]`` load per slab (shared by the whole tile);
* codes become floats with one OR and one subtraction: ``(u | 0x4B000000)`` read as float32 is exactly
  ``2**23 + u``, so subtracting ``2**23 + 2**(b-1) + zp`` gives the signed code ``q - zp`` exactly;
* products ``x * (q - zp)`` (exact in float32) accumulate elementwise into a ``[SL, BLOCK_N]`` float32 tile
  (one FMA per code); the tile is reduced over SL only when a scale group ends, then multiplied by the group's
  scale (channel scales: once in the epilogue), as the exact math prescribes.
One program row per token (grid axis 0 = M; the weight tile is re-read from L2 for each extra row).
SPLIT_K > 1 spreads K over programs that add float32 partials atomically into a zeroed buffer.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gemv_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, N, K, NG, stride_xm, stride_om,
                G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr, SL: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS
    BLOCK_K: tl.constexpr = SL * EPW
    SPG: tl.constexpr = G // SL  # slabs per scale group (G = BLOCK_K when scales are per channel)
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, SL)
    nmask = offs_n < N
    w_cols = w_ptr + offs_n[None, :]
    x_row = x_ptr + row * stride_xm
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    part = tl.zeros([SL, BLOCK_N], dtype=tl.float32)
    n_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(n_tiles, SPLIT_K)
    t_lo = pid_k * per_split
    t_hi = tl.minimum(t_lo + per_split, n_tiles)
    for t in range(t_lo, t_hi):
        k0 = t * BLOCK_K
        words = tl.load(w_cols + (t * SL + offs_s)[:, None].to(tl.int64) * N, mask=nmask[None, :], other=0)
        for j in tl.static_range(EPW):
            kj = k0 + j * SL
            ks = kj + offs_s
            xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
            sub = 8388608.0 + (1 << (BITS - 1))  # 2**23 + code offset
            if ASYM:
                zp = tl.load(wz_ptr + offs_n * NG + kj // G, mask=nmask, other=0).to(tl.float32)
                sub = (sub + zp)[None, :]
            q = (((words >> (j * BITS)) & ((1 << BITS) - 1)) | 0x4B000000).to(tl.float32, bitcast=True) - sub
            part += xj[:, None] * q
            if GROUP_SCALE:
                if (j + 1) % SPG == 0 or j == EPW - 1:  # the group (or the tile, if groups span tiles) ends
                    s = tl.load(ws_ptr + offs_n * NG + kj // G, mask=nmask, other=0.0)
                    acc += tl.sum(part, axis=0) * s
                    part = tl.zeros([SL, BLOCK_N], dtype=tl.float32)
    if GROUP_SCALE:
        y = acc
    else:
        s = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        y = tl.sum(part, axis=0) * s
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b
    optr = out_ptr + row * stride_om + offs_n
    if SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=nmask)
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=nmask)
