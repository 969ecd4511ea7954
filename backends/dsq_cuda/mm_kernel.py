"""The quantized GEMM kernel: ``y[M, N] = dequant(x) @ dequant(W)^T + bias`` for every scheme, in Triton.

One kernel body, specialised at compile time (``tl.constexpr``) per scheme, so every scheme shares the same
tiling, split-K and epilogue code. Per K tile of BLOCK_K inputs (BLOCK_K divides the group size, so one
tile sees one weight group and one activation group):

    weight codes   int4/int8 unpacked in registers from the canonical int32 words (or loaded as int8/fp8)
    W8A16/W4A16    part = x_tile @ (q - zp)^T   (codes exactly representable in x's bf16/fp16: no rounding),
                   fp32 accumulation; group scales applied per tile, channel scales in the epilogue
    W8A8 static    acc_i32 += xq @ q^T; epilogue (acc - zx * sum_k q[n, k]) * sx * sw[n]
    W8A8 dynamic   acc_i32 += xq @ q^T; epilogue acc * sx[m] * sw[n]
    W4A8 two-level acc_i32 += xq @ (q4 * s2)^T  (the int8 weight rebuilt in integer registers); acc * sx[m] * s1[n]
    W4AFP8         part = xq_fp8 @ fp8(q4)^T (fp32); acc += part * sw[n, g]; epilogue acc * sx[m]
    FP8_BLOCK      part = xq_fp8 @ wq_fp8^T; acc += part * sx[m, g] * sw[n // 128, g]
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
def _load_weight_tile(w_ptr, offs_n, k0, N, K, NW, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      WBITS: tl.constexpr, WPACKED: tl.constexpr):
    """Weight codes [BLOCK_N, BLOCK_K] as int32 (signed codes, 0 outside the matrix) or the raw fp8/int8."""
    n64 = offs_n[:, None].to(tl.int64)
    nmask = offs_n[:, None] < N
    if WPACKED:
        EPW: tl.constexpr = 32 // WBITS
        WK: tl.constexpr = BLOCK_K // EPW
        offs_w = k0 // EPW + tl.arange(0, WK)
        words = tl.load(w_ptr + n64 * NW + offs_w[None, :], mask=nmask & (offs_w[None, :] < NW), other=0)
        shifts = tl.arange(0, EPW) * WBITS
        u = (words[:, :, None] >> shifts[None, None, :]) & ((1 << WBITS) - 1)
        q = tl.reshape(u, [BLOCK_N, BLOCK_K]) - (1 << (WBITS - 1))
        offs_k = k0 + tl.arange(0, BLOCK_K)
        # padding codes decode to -2**(b-1): zero them so they add nothing
        return tl.where(nmask & (offs_k[None, :] < K), q, 0)
    else:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        return tl.load(w_ptr + n64 * K + offs_k[None, :], mask=nmask & (offs_k[None, :] < K), other=0)


@triton.jit
def qmm_kernel(x_ptr, xs_ptr, xz_ptr, w_ptr, ws_ptr, wz_ptr, s2_ptr, corr_ptr, bias_ptr, out_ptr,
               M, N, K, NW, NG, NGX, stride_xm, stride_om,
               G: tl.constexpr, GN: tl.constexpr, ACT: tl.constexpr, WBITS: tl.constexpr, WPACKED: tl.constexpr,
               GROUP_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr, ASYM: tl.constexpr,
               TWO_LEVEL: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, SPLIT_K: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
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
    for t in range(t_lo, t_hi):
        k0 = t * BLOCK_K
        offs_k = k0 + tl.arange(0, BLOCK_K)
        if not (ACT == 0 and WPACKED):
            x = tl.load(x_ptr + m64 * stride_xm + offs_k[None, :], mask=mmask[:, None] & (offs_k[None, :] < K),
                        other=0.0)
        g = k0 // G
        if ACT == 0 and WPACKED:
            # weight-only: bit field j of every word holds the elements k0 + EPW*c + j, so instead of
            # unpacking and reshaping the weights, gather the matching x columns (x is small and cached) and
            # run EPW tensor-core dots of depth BLOCK_K / EPW. Codes become floats with the OR/subtract trick.
            EPW: tl.constexpr = 32 // WBITS
            WK: tl.constexpr = BLOCK_K // EPW
            offs_c = tl.arange(0, WK)
            wcols = k0 // EPW + offs_c
            words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * NW + wcols[None, :],
                            mask=nmask[:, None] & (wcols[None, :] < NW), other=0)
            sub = 8388608.0 + (1 << (WBITS - 1))
            if ASYM:
                zp = tl.load(wz_ptr + offs_n * NG + g, mask=nmask, other=0).to(tl.float32)
                sub = (sub + zp)[:, None]
            part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for j in tl.static_range(EPW):
                u = ((words >> (j * WBITS)) & ((1 << WBITS) - 1)) | 0x4B000000
                qf = u.to(tl.float32, bitcast=True) - sub
                kk = k0 + offs_c * EPW + j
                xj = tl.load(x_ptr + m64 * stride_xm + kk[None, :], mask=mmask[:, None] & (kk[None, :] < K),
                             other=0.0)
                if IEEE:
                    part += tl.dot(xj.to(tl.float32), tl.trans(qf), input_precision="ieee")
                else:
                    part += tl.dot(xj, tl.trans(qf.to(xj.dtype)))
        else:
            q = _load_weight_tile(w_ptr, offs_n, k0, N, K, NW, BLOCK_N, BLOCK_K, WBITS, WPACKED)
        if ACT == 0:
            if not WPACKED:  # (no preset stores weight-only codes unpacked; kept for completeness)
                part = tl.dot(x.to(tl.float32), tl.trans(q.to(tl.float32)), input_precision="ieee")
        elif INT_ACC:
            if TWO_LEVEL:
                s2 = tl.load(s2_ptr + offs_n * NG + g, mask=nmask, other=0).to(tl.int32)
                q = q * s2[:, None]
            part = tl.dot(x, tl.trans(q.to(tl.int8)), out_dtype=tl.int32)
        else:
            if WPACKED:  # int4 codes are exact in e4m3
                wt = q.to(tl.float16).to(tl.float8e4nv)
            else:  # fp8 weights travel as uint8 so masked lanes can be filled with +0.0
                wt = q.to(tl.float8e4nv, bitcast=True)
            part = tl.dot(x, tl.trans(wt))
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
        tl.atomic_add(optr, y, mask=omask)
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=omask)
