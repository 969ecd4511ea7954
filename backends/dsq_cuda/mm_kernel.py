"""The quantized GEMM kernel: ``y[M, N] = dequant(x) @ dequant(W)^T + bias`` for every scheme, in Triton.

One kernel body, specialised at compile time (``tl.constexpr``) per scheme, so every scheme shares the same
tiling, split-K and epilogue code. Per K tile of BLOCK_K inputs:

    packed int4/int8 weights (W4A16, W4A16_ASYM, W8A16, W4A8_DYNAMIC, W4AFP8) are read in the slab layout
                   of dsq_cuda.slab (BLOCK_K = EPW * SL): field j of a [SL, BLOCK_N] word tile is the weight
                   slab for the contiguous x columns k0 + j*SL + [0, SL), so a tile is EPW shift+mask ops and
                   EPW tensor-core dots of depth SL; SL divides the scale group, so each slab has one group
    W8A16/W4A16    part = x_slab @ (q - zp)  (codes exactly representable in x's bf16/fp16: no rounding),
                   fp32 accumulation; group scales applied per slab, channel scales in the epilogue
    W8A8 static    acc_i32 += xq @ q^T; epilogue (acc - zx * sum_k q[n, k]) * sx * sw[n]
    W8A8 dynamic   acc_i32 += xq @ q^T; epilogue acc * sx[m] * sw[n]
    W4A8 two-level acc_i32 += xq_slab @ (q4 * s2)  (the int8 weight rebuilt in integer registers);
                   epilogue acc * sx[m] * s1[n]
    W4AFP8         part = xq_fp8_slab @ fp8(q4) (fp32); acc += part * sw[n, g]; epilogue acc * sx[m]
    FP8_BLOCK      part = xq_fp8 @ wq_fp8^T; acc += part * sx[m, g] * sw[n // 128, g]
      (unpacked weights: BLOCK_K divides the group size, so one tile sees one weight and activation group)
The only differences from the exact result are float32 accumulation order and the final rounding to x's
dtype (int32 accumulation is exact). SPLIT_K > 1 splits the K loop over programs that add float32 partial
results atomically into a zeroed float32 buffer (decode shapes: more programs than output tiles).
"""

from __future__ import annotations

import triton
import triton.language as tl

# ACT modes
ACT_FLOAT, ACT_INT8_TOKEN, ACT_INT8_STATIC, ACT_FP8_TOKEN, ACT_FP8_GROUP = 0, 1, 2, 3, 4


@triton.jit
def qmm_kernel(x_ptr, xs_ptr, xz_ptr, w_ptr, ws_ptr, wz_ptr, s2_ptr, corr_ptr, bias_ptr, out_ptr,
               M, N, K, NG, NGX, stride_xm, stride_om,
               G: tl.constexpr, GN: tl.constexpr, ACT: tl.constexpr, WBITS: tl.constexpr, WPACKED: tl.constexpr,
               GROUP_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr, ASYM: tl.constexpr,
               TWO_LEVEL: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, SPLIT_K: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               SL: tl.constexpr, EVEN_K: tl.constexpr = False):
    """EVEN_K (one-byte codes): K % BLOCK_K == 0, so the K loop's loads need no K mask."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask = offs_m < M
    nmask = offs_n < N
    m64 = offs_m[:, None].to(tl.int64)
    INT_ACC: tl.constexpr = ACT == 1 or ACT == 2
    if INT_ACC:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    n_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(n_tiles, SPLIT_K)
    t_lo = pid_k * per_split
    t_hi = tl.minimum(t_lo + per_split, n_tiles)
    EPW: tl.constexpr = 32 // WBITS
    OFF: tl.constexpr = 1 << (WBITS - 1)
    SPG: tl.constexpr = G // SL  # slabs per scale group (G: the group, or BLOCK_K when per channel)
    offs_s = tl.arange(0, SL)
    w_cols = w_ptr + offs_n[None, :]
    for t in range(t_lo, t_hi):
        k0 = t * BLOCK_K
        if WPACKED:
            # slab words (dsq_cuda.slab): field j of the [SL, BN] tile is the weight slab for x columns
            # k0 + j*SL + [0, SL): EPW shift+mask ops and EPW dots, contiguous x loads, no reshape
            words = tl.load(w_cols + (t * SL + offs_s)[:, None].to(tl.int64) * N, mask=nmask[None, :], other=0)
            part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for j in tl.static_range(EPW):
                kj = k0 + j * SL
                ks = kj + offs_s
                xj = tl.load(x_ptr + m64 * stride_xm + ks[None, :], mask=mmask[:, None] & (ks[None, :] < K),
                             other=0.0)
                u = (words >> (j * WBITS)) & ((1 << WBITS) - 1)
                gj = tl.minimum(kj // G, NG - 1)  # slabs past K (x is 0 there) read the last group: never out of bounds
                if INT_ACC:  # W4A8 two-level: q4 * s2 is the exact int8 level-1 code
                    q = u - OFF
                    if TWO_LEVEL:
                        s2 = tl.load(s2_ptr + offs_n * NG + gj, mask=nmask, other=0).to(tl.int32)
                        q = q * s2[None, :]
                    acc += tl.dot(xj, q.to(tl.int8), out_dtype=tl.int32)
                else:
                    # (u | 0x4B000000) read as float32 is exactly 2**23 + u: one subtraction gives q - zp
                    sub = 8388608.0 + OFF
                    if ASYM:
                        zp = tl.load(wz_ptr + offs_n * NG + gj, mask=nmask, other=0).to(tl.float32)
                        sub = (sub + zp)[None, :]
                    qf = (u | 0x4B000000).to(tl.float32, bitcast=True) - sub
                    if ACT == 0:
                        if IEEE:
                            part += tl.dot(xj.to(tl.float32), qf, input_precision="ieee")
                        else:
                            part += tl.dot(xj, qf.to(xj.dtype))
                    else:  # W4AFP8: int4 codes are exact in e4m3
                        part += tl.dot(xj, qf.to(tl.float8e4nv))
                    # a group's slabs are consecutive: scale once when its last slab (or the tile) ends; a group
                    # that neither divides nor holds whole tiles (e.g. 96 in a 256-input tile) is not aligned
                    # to the tile, so such groups scale every slab
                    if (j + 1) % SPG == 0 or j == EPW - 1 or (BLOCK_K % G != 0 and G % BLOCK_K != 0):
                        if GROUP_SCALE:
                            ws = tl.load(ws_ptr + offs_n * NG + gj, mask=nmask, other=0.0)
                            acc += part * ws[None, :]
                        else:
                            acc += part
                        part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            if EVEN_K:
                x = tl.load(x_ptr + m64 * stride_xm + offs_k[None, :], mask=mmask[:, None], other=0.0)
                q = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :], mask=nmask[:, None], other=0)
            else:
                x = tl.load(x_ptr + m64 * stride_xm + offs_k[None, :], mask=mmask[:, None] & (offs_k[None, :] < K),
                            other=0.0)
                kmask = nmask[:, None] & (offs_k[None, :] < K)
                q = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :], mask=kmask, other=0)
            g = k0 // G
            if ACT == 0:  # (no preset stores weight-only codes one per byte; kept for completeness)
                part = tl.dot(x.to(tl.float32), tl.trans(q.to(tl.float32)), input_precision="ieee")
            elif INT_ACC:
                part = tl.dot(x, tl.trans(q), out_dtype=tl.int32)
            else:  # fp8 weights travel as uint8 so masked lanes can be filled with +0.0
                part = tl.dot(x, tl.trans(q.to(tl.float8e4nv, bitcast=True)))
            if GROUP_SCALE:
                ws = tl.load(ws_ptr + offs_n * NG + g, mask=nmask, other=0.0)
                acc += part * ws[None, :]
            elif BLOCK_SCALE:
                ws = tl.load(ws_ptr + (offs_n // GN) * NG + g, mask=nmask, other=0.0)
                xs = tl.load(xs_ptr + offs_m * NGX + g, mask=mmask, other=0.0)
                acc += part * (xs[:, None] * ws[None, :])
            else:
                acc += part
    # epilogue: per-channel weight scale, activation scale, static offset correction, bias
    if INT_ACC:
        if ACT == 2:
            corr = tl.load(corr_ptr + offs_n, mask=nmask, other=0)
            zx = tl.load(xz_ptr).to(tl.int32)
            # the offset term belongs once to the whole K sum: only split 0 subtracts it
            acc = acc - tl.where(pid_k == 0, zx, 0) * corr[None, :]
            xs = tl.load(xs_ptr)
            y = acc.to(tl.float32) * xs
        else:
            xs = tl.load(xs_ptr + offs_m, mask=mmask, other=0.0)
            y = acc.to(tl.float32) * xs[:, None]
        ws = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        y = y * ws[None, :]
    elif ACT == 3:
        xs = tl.load(xs_ptr + offs_m, mask=mmask, other=0.0)
        y = acc * xs[:, None]
    elif GROUP_SCALE or BLOCK_SCALE:
        y = acc
    else:
        ws = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        y = acc * ws[None, :]
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b[None, :]
    optr = out_ptr + m64 * stride_om + offs_n[None, :]
    omask = mmask[:, None] & nmask[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=omask, sem="relaxed")  # unordered: the kernel's end orders them
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=omask)
