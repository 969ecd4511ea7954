"""Decode kernel for weight-only packed schemes (W4A16, W4A16_ASYM, W8A16) at M = 1: CUDA cores, no MMA.

At one token the GEMM reads each weight byte once and does 2 flops per weight, so it is bound by how many
weight bytes are in flight and by the instructions spent per code. The kernel reads the *row-tile* layout
of :func:`dsq_cuda.slab.to_row_tiles` (words ``[tiles, N, SW]``):

* a thread owns whole rows of a tile: SW contiguous words (SW = 16: four 16-byte loads) per row, and the
  ``[BLOCK_N, SW]`` tile of a program is one contiguous block of memory, so loads are wide and coalesced
  and no value ever crosses threads until the final group reduction (which is within a thread);
* field j of the tile multiplies the SW contiguous x values ``t*LBK + j*SW + [0, SW)``: the same for every
  row, one broadcast load;
* a code becomes a float with one OR and one subtraction: ``(u | 0x4B000000)`` read as float32 is exactly
  ``2**23 + u``, so subtracting ``2**23 + 2**(b-1) + zp`` gives ``q - zp`` exactly; the product with x
  (bf16/fp16, or fp32) is exact in float32 and is accumulated with one FMA into a ``[BLOCK_N, SW]`` tile,
  which is summed over SW when a scale group ends and multiplied by the group's scale (channel scales: once
  in the epilogue), as the exact math prescribes: ``y[n] = sum_g s[n, g] * sum_{k in g} x[k] * (q - zp)``.

The only differences from the exact result are float32 accumulation order and the final rounding. Split-K
(SPLIT_K > 1: the H200 sweep wants many programs in flight, up to 16 per output tile) adds float32 partial
sums atomically into a zeroed buffer. One program row per token (grid axis 0 = M): for M > 1 the tiled
tensor-core kernel is the better choice, and the dispatcher uses this kernel at M = 1 only.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gemv_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, N, K, NG, stride_xm, stride_om,
                G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr, SW: tl.constexpr,
                CH: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS
    LBK: tl.constexpr = EPW * SW  # inputs per tile
    # CH: inputs per chunk (dsq_cuda.slab.row_tile_chunk), a multiple of the tile and of the scale group
    TPC: tl.constexpr = CH // LBK  # tiles per chunk
    FPG: tl.constexpr = G // SW  # fields per scale group (G: the group, or LBK when scales are per channel)
    OFF: tl.constexpr = 1 << (BITS - 1)
    MASK: tl.constexpr = (1 << BITS) - 1
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, SW)
    nmask = rows < N
    wbase = w_ptr + rows[:, None] * SW + offs_s[None, :]
    x_row = x_ptr + row * stride_xm
    chunks = tl.cdiv(K, CH)  # the layout is padded to whole chunks with code 0
    per = tl.cdiv(chunks, SPLIT_K)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)
    for c in range(pid_k * per, tl.minimum(pid_k * per + per, chunks)):
        for tt in tl.static_range(TPC):
            t = c * TPC + tt
            words = tl.load(wbase + t.to(tl.int64) * N * SW, mask=nmask[:, None], other=0)
            for j in tl.static_range(EPW):
                k0 = t * LBK + j * SW
                ks = k0 + offs_s
                g = tl.minimum(k0 // G, NG - 1)  # padding past K reads the last group (its codes give 0)
                xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
                sub = 8388608.0 + OFF  # 2**23 + code offset
                if ASYM:
                    zp = tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
                    sub = (sub + zp)[:, None]
                q = (((words >> (j * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True) - sub
                part += xj[None, :] * q
                if GROUP_SCALE:
                    if (tt * EPW + j + 1) % FPG == 0:  # the last field of a scale group
                        s = tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0.0)
                        acc += tl.sum(part, axis=1) * s
                        part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)
    if GROUP_SCALE:
        y = acc
    else:
        s = tl.load(ws_ptr + rows, mask=nmask, other=0.0)
        y = tl.sum(part, axis=1) * s
    if HAS_BIAS:
        b = tl.load(bias_ptr + rows, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b
    optr = out_ptr + row * stride_om + rows
    if SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=nmask)
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=nmask)
