"""The fused-MoE grouped GEMM kernel (Triton), used twice per layer: gate+up with SwiGLU, then down.

One program computes a ``[BLOCK_M, BLOCK_N]`` output tile of one M-block of the expert-sorted pair list
(moe_align.py) against the weights of that block's expert ``e``:

GATE_UP (x [T, H] -> intermediate [rows, I]):
    rows of A are tokens ``t = pair // top_k``; two accumulators, ``g`` over weight rows n and ``u`` over rows
    I + n of ``gate_up[e]``, share every A tile. Epilogue (float32):
        g, u = round(g), round(u)                        h = matmul(x, gate_up) rounded to x.dtype
        a = round(g / (1 + exp(-g)) * u)                 SwiGLU, rounded to x.dtype
    ``a`` is stored at the pair's padded position, and, when the down projection quantizes its input
    dynamically, ``max |a|`` of the tile's rows is folded into an amax buffer with an atomic max (per row,
    or per row and 128-column group). That is the fused half of the next activation quantization: the down
    kernel turns the amax into the scale and quantizes on load, so the intermediate never takes an extra pass.
DOWN (intermediate -> out float32 [P, H]):
    rows of A are padded positions; epilogue ``out[pair] = round(acc) * topk_weight[pair]`` (the routing
    weight is applied in float32 to the x.dtype-rounded expert output; the caller sums the top_k rows).

Per K-step: ``part = A_tile @ W_tile`` on the tensor cores in the scheme's type (bf16/fp16, int8 -> int32,
fp8 -> fp32, or fp32 IEEE), minus ``zp * colsum(W)`` for a static activation zero point; then
``acc += part * w_scale[g] * a_scale[g]`` when scales change along K (group/block weights, token-group
activations), else ``acc += part`` and channel/token/tensor scales multiply the accumulator once at the end.
Blocks whose expert is -1 (past the used blocks) do nothing.

Switches of the prefill speed paths (each computes the same integers as the path it replaces, moe.py):
ZP_CORR subtracts the static zero point's share once in the epilogue, ``acc -= zp * corr[e, n]`` with the
precomputed per-expert code sums ``corr`` (moe_layout), rather than ``zp * colsum(W tile)`` at every K step.
W_SPLIT (int4 weights, int8 codes, two-level group scales) reads the int4 words as bytes, each byte's low and
high fields as two int8 tiles (inputs ``k0 + 2j`` and ``k0 + 2j + 1``), multiplies them by two contiguous
activation tiles that moe_requant.split_halves laid out in that order, and scales the int32 partial sum by the
group's integer s2 (moe_tiles.int4_split_step); for weight-only int4 (W4A16, float group scales) the same with
the codes converted to the activations' bf16 / fp16 and float32 partial sums scaled per group (not bit-identical
to the unsplit path: the MMA sums the same products in another order); UNPACK_ASM decodes the bytes with inline
PTX; SWAP_AB computes the transposed tile ``W @ A^T``, the decoded weights as the MMA's first operand.
W_BYTES (W8A16) reads the int8-in-words codes as bytes in input order and computes the transposed tile, with
no reshape (moe_tiles.int8_bytes_step); the same products and sums as the unpacking path, in another order.
RT > 0 (with W_SPLIT or W_BYTES): the weights are the experts' row tiles (RT bytes a row a tile, ``stride_wn``
the bytes between tiles), the layout the decode paths read, and the activations come in the matching order.

A_KIND: 0 float x, 1 codes with stored per-row / per-group scales, 2 quantized on load from a stored amax,
3 quantized on load with the expert's static scale and zero point, 4 static codes quantized beforehand (the
zero-point correction and the static scale still apply). A_POS: A's rows are the padded positions (codes
quantized per position by moe_requant) rather than tokens.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda.moe_tiles import (
    a_group_scale,
    int4_split_step,
    int8_bytes_step,
    load_a,
    load_w,
    round_to,
    row_scale,
    w_channel_scale,
    w_tile_scale,
)


@triton.jit
def moe_gemm_kernel(
        a_ptr, stride_am, as_ptr, stride_asm, st_s_ptr, st_zp_ptr,
        w_ptr, stride_we, stride_wn, ws_ptr, stride_se, stride_sn,
        zp_ptr, stride_ze, stride_zn, gs_ptr, stride_ge, stride_gn,
        sorted_ids_ptr, block_expert_ptr, tw_ptr, out_ptr, stride_om, amax_ptr, stride_xm_amax,
        corr_ptr, stride_ce, N, K, num_pairs, top_k, tiny,
        GATE_UP: tl.constexpr, W_KIND: tl.constexpr, W_ZP: tl.constexpr, W_GS: tl.constexpr,
        W_SCALE: tl.constexpr, GROUP: tl.constexpr, BLOCK_N_W: tl.constexpr, BLOCK_K_W: tl.constexpr,
        A_KIND: tl.constexpr, A_FP8: tl.constexpr, A_GROUPED: tl.constexpr, A_GROUP: tl.constexpr,
        HALF_AWAY: tl.constexpr, DOT: tl.constexpr, OUT_KIND: tl.constexpr,
        NEXT_AMAX: tl.constexpr, NEXT_GROUP: tl.constexpr, EVEN_K: tl.constexpr, TILE_SCALED: tl.constexpr,
        UNIQUE_LOAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        A_POS: tl.constexpr = False, ZP_CORR: tl.constexpr = False, W_SPLIT: tl.constexpr = False,
        UNPACK_ASM: tl.constexpr = False, SWAP_AB: tl.constexpr = False, W_BYTES: tl.constexpr = False,
        RT: tl.constexpr = 0):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e >= 0:
        e64 = e.to(tl.int64)
        pos = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids_ptr + pos)
        rmask = pair < num_pairs
        if GATE_UP and not A_POS:
            a_rows = pair // top_k
        else:  # the intermediate, or codes quantized per padded position (moe_requant)
            a_rows = pos
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        st_s = 1.0
        st_zp = 0.0
        if A_KIND == 3 or A_KIND == 4:
            st_s = tl.load(st_s_ptr + e64)
            st_zp = tl.load(st_zp_ptr + e64).to(tl.float32)
        if DOT == 1 and not TILE_SCALED:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
            acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        # the split int4 paths' group scales: two-level s2 (int32 sums), or weight-only / W4AFP8 float scales
        if DOT == 1:
            sc_ptr, stride_sce, stride_scn = gs_ptr, stride_ge, stride_gn
        else:
            sc_ptr, stride_sce, stride_scn = ws_ptr, stride_se, stride_sn
        if W_BYTES:
            # int8 codes in words read as bytes (W8A16), transposed: out^T = W @ A^T (moe_tiles.int8_bytes_step)
            a_col = a_ptr + a_rows[None, :].to(tl.int64) * stride_am
            kb = (K + 3) // 4 * 4
            acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            acc_ut = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + offs_k
                a_t = tl.load(a_col + ks[:, None], mask=rmask[None, :] & (ks < K)[:, None], other=0)
                acc_t = int8_bytes_step(acc_t, a_t, w_ptr, e64, cols, k0, N, kb, stride_we, stride_wn, DOT, BLOCK_K,
                                        RT)
                if GATE_UP:
                    acc_ut = int8_bytes_step(acc_ut, a_t, w_ptr, e64, cols + N, k0, 2 * N, kb, stride_we, stride_wn,
                                             DOT, BLOCK_K, RT)
            acc = tl.trans(acc_t)
            acc_u = tl.trans(acc_ut)
        elif W_SPLIT and SWAP_AB:
            # int4 weights x int8 codes (W4A8 two-level) or x bf16/fp16 (W4A16), transposed: out^T = W @ A^T
            offs_h = tl.arange(0, BLOCK_K // 2)
            a_col = a_ptr + a_rows[None, :].to(tl.int64) * stride_am
            kb = (K + 7) // 8 * 4
            ACC_T: tl.constexpr = tl.int32 if DOT == 1 else tl.float32
            acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC_T)
            acc_ut = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC_T)
            for k0 in range(0, K, BLOCK_K):
                a_lo = tl.load(a_col + (k0 + offs_h)[:, None], mask=rmask[None, :], other=0)
                a_hi = tl.load(a_col + (k0 + BLOCK_K // 2 + offs_h)[:, None], mask=rmask[None, :], other=0)
                acc_t = int4_split_step(acc_t, a_lo, a_hi, w_ptr, sc_ptr, e64, cols, k0, N, kb, stride_we,
                                        stride_wn, stride_sce, stride_scn, GROUP, UNPACK_ASM, True, BLOCK_K,
                                        BLOCK_N, DOT, RT)
                if GATE_UP:
                    acc_ut = int4_split_step(acc_ut, a_lo, a_hi, w_ptr, sc_ptr, e64, cols + N, k0, 2 * N, kb,
                                             stride_we, stride_wn, stride_sce, stride_scn, GROUP, UNPACK_ASM, True,
                                             BLOCK_K, BLOCK_N, DOT, RT)
            acc = tl.trans(acc_t)
            acc_u = tl.trans(acc_ut)
        elif W_SPLIT:
            # int4 weights x int8 codes (W4A8 two-level) or x bf16/fp16 (W4A16), the split-halves way
            offs_h = tl.arange(0, BLOCK_K // 2)
            a_row = a_ptr + a_rows[:, None].to(tl.int64) * stride_am
            kb = (K + 7) // 8 * 4
            for k0 in range(0, K, BLOCK_K):
                a_lo = tl.load(a_row + (k0 + offs_h)[None, :], mask=rmask[:, None], other=0)
                a_hi = tl.load(a_row + (k0 + BLOCK_K // 2 + offs_h)[None, :], mask=rmask[:, None], other=0)
                acc = int4_split_step(acc, a_lo, a_hi, w_ptr, sc_ptr, e64, cols, k0, N, kb, stride_we, stride_wn,
                                      stride_sce, stride_scn, GROUP, UNPACK_ASM, False, BLOCK_K, BLOCK_N, DOT, RT)
                if GATE_UP:
                    acc_u = int4_split_step(acc_u, a_lo, a_hi, w_ptr, sc_ptr, e64, cols + N, k0, 2 * N, kb,
                                            stride_we, stride_wn, stride_sce, stride_scn, GROUP, UNPACK_ASM, False,
                                            BLOCK_K, BLOCK_N, DOT, RT)
        else:
            for k0 in range(0, K, BLOCK_K):
                a = load_a(a_ptr, a_rows, rmask, offs_k, k0, K, stride_am, as_ptr, stride_asm, st_s, st_zp,
                           A_KIND, A_FP8, A_GROUPED, A_GROUP, HALF_AWAY, DOT, EVEN_K, tiny)
                w = load_w(w_ptr, zp_ptr, gs_ptr, e64, cols, offs_k, k0, N, K, stride_we, stride_wn, stride_ze,
                           stride_zn, stride_ge, stride_gn, W_KIND, W_ZP, W_GS, GROUP, DOT, EVEN_K, UNIQUE_LOAD,
                           BLOCK_K, BLOCK_N)
                if GATE_UP:
                    w_u = load_w(w_ptr, zp_ptr, gs_ptr, e64, cols + N, offs_k, k0, 2 * N, K, stride_we, stride_wn,
                                 stride_ze, stride_zn, stride_ge, stride_gn, W_KIND, W_ZP, W_GS, GROUP, DOT, EVEN_K,
                                 UNIQUE_LOAD, BLOCK_K, BLOCK_N)
                if DOT == 1:
                    part = tl.dot(a, w, out_dtype=tl.int32)
                    if GATE_UP:
                        part_u = tl.dot(a, w_u, out_dtype=tl.int32)
                elif DOT == 5:
                    part = tl.dot(a, w, input_precision="ieee")
                    if GATE_UP:
                        part_u = tl.dot(a, w_u, input_precision="ieee")
                else:
                    part = tl.dot(a, w)
                    if GATE_UP:
                        part_u = tl.dot(a, w_u)
                if (A_KIND == 3 or A_KIND == 4) and not ZP_CORR:  # (q - zp) @ w = q @ w - zp * colsum(w), in int32
                    zp_i = st_zp.to(tl.int32)
                    part = part - zp_i * tl.sum(w.to(tl.int32), axis=0)[None, :]
                    if GATE_UP:
                        part_u = part_u - zp_i * tl.sum(w_u.to(tl.int32), axis=0)[None, :]
                if TILE_SCALED:
                    if A_GROUPED:
                        sa = a_group_scale(as_ptr, a_rows, rmask, k0, stride_asm, A_KIND, A_FP8, A_GROUP, tiny)
                    else:
                        sa = tl.full([BLOCK_M], 1.0, tl.float32)
                    if W_SCALE == 2 or W_SCALE == 3:
                        sw = w_tile_scale(ws_ptr, e64, cols, k0, N, stride_se, stride_sn, W_SCALE, GROUP,
                                          BLOCK_N_W, BLOCK_K_W)
                    else:
                        sw = tl.full([BLOCK_N], 1.0, tl.float32)
                    acc += part.to(tl.float32) * sa[:, None] * sw[None, :]
                    if GATE_UP:
                        if W_SCALE == 2 or W_SCALE == 3:
                            sw_u = w_tile_scale(ws_ptr, e64, cols + N, k0, 2 * N, stride_se, stride_sn, W_SCALE,
                                                GROUP, BLOCK_N_W, BLOCK_K_W)
                        else:
                            sw_u = sw
                        acc_u += part_u.to(tl.float32) * sa[:, None] * sw_u[None, :]
                else:
                    acc += part
                    if GATE_UP:
                        acc_u += part_u
        if ZP_CORR:  # the zero point's whole share at once: zp * sum_k q[e, n, k] (precomputed, exact in int32)
            zp_i = st_zp.to(tl.int32)
            acc -= zp_i * tl.load(corr_ptr + e64 * stride_ce + cols, mask=cols < N, other=0)[None, :]
            if GATE_UP:
                acc_u -= zp_i * tl.load(corr_ptr + e64 * stride_ce + cols + N, mask=cols < N, other=0)[None, :]
        # Scales that are constant along K.
        out = acc.to(tl.float32)
        out_u = acc_u.to(tl.float32)
        if W_SCALE == 1:
            out = out * w_channel_scale(ws_ptr, e64, cols, N, stride_se, stride_sn)[None, :]
            if GATE_UP:
                out_u = out_u * w_channel_scale(ws_ptr, e64, cols + N, 2 * N, stride_se, stride_sn)[None, :]
        if (A_KIND == 1 or A_KIND == 2) and not A_GROUPED:
            sr = row_scale(as_ptr, a_rows, rmask, stride_asm, A_KIND, A_FP8, tiny)[:, None]
            out = out * sr
            out_u = out_u * sr
        if A_KIND == 3 or A_KIND == 4:
            out = out * st_s
            out_u = out_u * st_s
        cmask = cols < N
        if GATE_UP:
            g = round_to(out, OUT_KIND)
            u = round_to(out_u, OUT_KIND)
            h = round_to(g / (1.0 + tl.exp(-g)) * u, OUT_KIND)
            dst = out_ptr + pos[:, None].to(tl.int64) * stride_om + cols[None, :]
            tl.store(dst, h.to(out_ptr.dtype.element_ty), mask=cmask[None, :])
            if NEXT_AMAX:
                m = tl.max(tl.where(cmask[None, :], tl.abs(h), 0.0), axis=1)
                if NEXT_GROUP > 0:
                    col = (pid_n * BLOCK_N) // NEXT_GROUP
                else:
                    col = 0
                tl.atomic_max(amax_ptr + pos.to(tl.int64) * stride_xm_amax + col, m)
        else:
            o = round_to(out, OUT_KIND)
            tw = tl.load(tw_ptr + pair, mask=rmask, other=0.0)
            dst = out_ptr + pair[:, None].to(tl.int64) * stride_om + cols[None, :]
            tl.store(dst, o * tw[:, None], mask=rmask[:, None] & cmask[None, :])


__all__ = ["moe_gemm_kernel", "triton"]
