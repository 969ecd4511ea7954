"""Decode kernel for weight-only packed schemes (W4A16, W4A16_ASYM, W8A16) at M = 1: CUDA cores, no MMA.

At one token the GEMM reads each weight byte once and does 2 flops per weight, so it is bound by how many
weight bytes are in flight and by the instructions spent per code. The kernel reads the *row-tile* layout
of :func:`dsq_cuda.slab.to_row_tiles` (words ``[tiles, N, SW]``):

* a thread owns whole rows of a tile: SW contiguous words (SW = 16: four 16-byte loads) per row, and the
  ``[BLOCK_N, SW]`` tile of a program is one contiguous block of memory, so loads are wide and coalesced
  and no value ever crosses threads until the final group reduction (which is within a thread);
* field j of the tile multiplies the SW contiguous x values ``t*LBK + j*SW + [0, SW)``: the same for every
  row, one broadcast load;
* a code costs three instructions: a shift and an and-or put the unsigned field u into the top mantissa bits
  of 1.0, so the word read as float32 is exactly ``f = 1 + u / 2**b``, and one FMA adds ``x * f`` (exact in
  float32 for bf16/fp16 x, at most 11 significant bits, times f's b + 1) into a ``[BLOCK_N, SW]`` tile. With
  ``q - zp = 2**b * f - (2**b + 2**(b-1) + zp)``, each scale group then needs only the sum of x besides:
  ``y[n] = sum_g s[n, g] * (2**b * sum_{k in g} x[k] * f[n, k] - (2**b + 2**(b-1) + zp[n, g]) * sum_{k in g} x[k])``
  (channel scales: one group spanning K, applied in the epilogue).

The differences from the exact result are float32 rounding in the sums and the final rounding: the sum of
``x * f`` carries ``2**b * 1.5 / E|q - zp|`` times the magnitude of the exact product sum (about 6 for int4,
3 for int8 on uniform codes), which leaves float32's error orders of magnitude inside the conformance bound
(docs/conformance.md: 2 u(bf16) per product); float32 x rounds each product once (2**-24).

Split-K (SPLIT_K > 1: the H200 sweep wants many programs in flight, up to 32 per output tile) adds float32
partial partial sums atomically into a zeroed buffer. One program row per token (grid axis 0 = M): for M > 1 the
tiled tensor-core kernel is the better choice, and the dispatcher uses this kernel at M = 1 only.

MOE: the same kernel serves a decode step of the fused MoE layer (dsq_cuda.moe_gemv) when every routed
expert sees one token: program row p is the (token, expert) pair p, whose weights are expert ``ids[p]`` of a
stacked layout (``stride_we`` words / ``stride_se`` scales apart) and whose x row is token ``p // X_DIV``;
pairs of experts outside ``[e_lo, e_hi)`` (another rank's, in expert parallelism) do nothing.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gemv_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, ids_ptr, N, K, NG, stride_xm, stride_om,
                stride_we, stride_se, e_lo, e_hi,
                G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr, SW: tl.constexpr,
                CH: tl.constexpr, MOE: tl.constexpr = False, X_DIV: tl.constexpr = 1):
    EPW: tl.constexpr = 32 // BITS
    LBK: tl.constexpr = EPW * SW  # inputs per tile
    # CH: inputs per chunk (dsq_cuda.slab.row_tile_chunk), a multiple of the tile and of the scale group
    TPC: tl.constexpr = CH // LBK  # tiles per chunk
    FPG: tl.constexpr = G // SW  # fields per scale group (G: the group, or LBK when scales are per channel)
    OFF: tl.constexpr = 1 << (BITS - 1)
    ONE: tl.constexpr = 1 << BITS  # f = 1 + u / ONE
    TOP: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)  # the top BITS mantissa bits of a float32
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, SW)
    nmask = rows < N
    chunks = tl.cdiv(K, CH)  # the layout is padded to whole chunks with code 0
    per = tl.cdiv(chunks, SPLIT_K)
    c_lo = pid_k * per
    c_hi = tl.minimum(c_lo + per, chunks)
    x_row = x_ptr + row * stride_xm
    if MOE:  # program row = one (token, expert) pair: weights of expert ids[row], x row = token = row // X_DIV
        e = tl.load(ids_ptr + row).to(tl.int64)
        # another rank's expert: no K chunks, so the program adds (or stores) zeros into its own pair's row
        c_hi = tl.where((e >= e_lo) & (e < e_hi), c_hi, c_lo)
        e = tl.minimum(tl.maximum(e, 0), e_hi - 1)
        w_ptr += e * stride_we
        ws_ptr += e * stride_se
        wz_ptr += e * stride_se
        x_row = x_ptr + (row // X_DIV) * stride_xm
    wbase = w_ptr + rows[:, None] * SW + offs_s[None, :]
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)  # sum of x * f per (row, lane), f = 1 + u / 2**BITS
    xacc = tl.zeros([SW], dtype=tl.float32)  # sum of x per lane over the same inputs
    for c in range(c_lo, c_hi):
        for tt in tl.static_range(TPC):
            t = c * TPC + tt
            words = tl.load(wbase + t.to(tl.int64) * N * SW, mask=nmask[:, None], other=0)
            for j in tl.static_range(EPW):
                k0 = t * LBK + j * SW
                ks = k0 + offs_s
                xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
                # field j moved to the top mantissa bits of 1.0: f = 1 + u / 2**BITS exactly (one shift, one
                # and-or); x * f is exact in float32 (8 + BITS + 1 significant bits)
                SH = 23 - BITS - BITS * j
                if SH >= 0:
                    f = ((words << SH) & TOP) | 0x3F800000
                else:
                    f = ((words >> (-SH)) & TOP) | 0x3F800000
                part += xj[None, :] * f.to(tl.float32, bitcast=True)
                xacc += xj
                if GROUP_SCALE:
                    if (tt * EPW + j + 1) % FPG == 0:  # the last field of a scale group
                        g = tl.minimum(k0 // G, NG - 1)  # padding past K reads the last group (x is 0 there)
                        s = tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0.0)
                        sub = ONE + OFF
                        if ASYM:
                            sub = sub + tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
                        # sum x * (q - zp) = 2**BITS * sum x * f - (2**BITS + 2**(BITS-1) + zp) * sum x
                        acc += (tl.sum(part, axis=1) * ONE - sub * tl.sum(xacc, axis=0)) * s
                        part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)
                        xacc = tl.zeros([SW], dtype=tl.float32)
    if GROUP_SCALE:
        y = acc
    else:
        s = tl.load(ws_ptr + rows, mask=nmask, other=0.0)
        y = (tl.sum(part, axis=1) * ONE - (ONE + OFF) * tl.sum(xacc, axis=0)) * s
    if HAS_BIAS:
        b = tl.load(bias_ptr + rows, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b
    optr = out_ptr + row * stride_om + rows
    if SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=nmask)
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=nmask)
