"""Fused-MoE decode kernels (Triton): a slab grouped GEMM with split-K, the SwiGLU pass, both for T <= 64.

``moe_slab_kernel`` computes, for the M-block ``pid_m`` of the expert-sorted pair list (moe_align.py) and
expert ``e = block_expert[pid_m]``, the float32 tile ``out[pair, n] = sum_k a[row(pair), k] * w[e, n, k]``
(scales applied, not rounded) over the K tiles of split ``pid_k``:

* Weights come in the slab layout of moe_layout.py: a ``[SL, BN]`` word tile holds EPW slabs (bit fields);
  slab j multiplies the activation columns ``k0 + j*SL ..`` (a contiguous load). ROW_TILES: the same word
  tiles read from the one-token GEMV's row tiles ``[E, tiles, N, SL]`` (dsq_cuda.slab.to_row_tiles, whose
  words hold the same fields), so the experts need one device copy of their codes, not two. Per slab:
  int4/int8 fields ``u`` become codes ``q = u - 2**(b-1)`` (minus the zero point, times the two-level group
  scale, in int32: exact), and for float dots via ``bitcast(u | 0x4B000000) - (2**23 + 2**(b-1))``, which is
  exactly ``q`` in float32 (one OR, one subtraction). One-per-byte kinds (int8, fp8, float) use EPW = 1.
* ``part = a_slab @ w_slab`` on the tensor cores (bf16/fp16 -> fp32, int8 -> int32, fp8 -> fp32, or IEEE
  fp32 in the interpreter). Scales that vary along K (weight groups/blocks, activation groups) multiply
  ``part`` per slab (SL divides every group); the others multiply the tile once at the end:
      out = (acc - zp_x * corr[e, n]) * s_x * s_w[n]       (static zero point only; corr from moe_layout)
* GATE_UP: activation rows are tokens ``pair // top_k``; down: rows are pairs. Output rows are pairs.
  A_KIND 4 (static codes, quantized once per padded position by moe_requant): rows are the block's positions.
* SPLIT_K > 1: programs add float32 partials atomically into a zeroed buffer (decode has few M-blocks, so
  splitting K is what fills the SMs). Rounding to x.dtype happens after the full sum (swiglu_kernel, combine).
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda.moe_tiles import (
    a_group_scale,
    load_a,
    round_to,
    row_scale,
    swiglu_values,
    w_channel_scale,
    w_tile_scale,
)
from dsq_cuda.pdl import prefetch_row_tiles, prefetch_rows_l2, wait_for_inputs


@triton.jit
def _slab(words, j: tl.constexpr, zp_ptr, gs_ptr, e64, cols, nmask, g, stride_ze, stride_zn, stride_ge,
          stride_gn, W_KIND: tl.constexpr, W_ZP: tl.constexpr, W_GS: tl.constexpr, DOT: tl.constexpr):
    """Weight slab j of a word tile, as the dot operand (see the module docstring)."""
    if W_KIND == 1 or W_KIND == 2:
        BITS: tl.constexpr = 4 if W_KIND == 1 else 8
        OFF: tl.constexpr = 1 << (BITS - 1)
        u = (words >> (BITS * j)) & ((1 << BITS) - 1)
        if W_ZP or W_GS or DOT == 1:
            q = u - OFF
            if W_ZP:
                zword = tl.load(zp_ptr + e64 * stride_ze + (cols // 8).to(tl.int64) * stride_zn + g,
                                mask=nmask, other=0)
                q = q - (((zword >> ((cols % 8) * 4)) & 15) - 8)[None, :]
            if W_GS:
                s2 = tl.load(gs_ptr + e64 * stride_ge + cols.to(tl.int64) * stride_gn + g, mask=nmask, other=0)
                q = q * s2.to(tl.int32)[None, :]
            if DOT == 1:
                w = q.to(tl.int8)
            else:
                w = q.to(tl.float32)
        else:
            w = (u | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + OFF)
        if DOT == 2:
            w = w.to(tl.float8e4nv)
        elif DOT == 3:
            w = w.to(tl.bfloat16)
        elif DOT == 4:
            w = w.to(tl.float16)
    elif W_KIND == 4:
        w = words.to(tl.float8e4nv, bitcast=True)
    elif DOT == 5:
        w = words.to(tl.float32)
    else:
        w = words
    return w


@triton.jit
def _prefetch(w_ptr, e, pid_n, pid_k, stride_we, stride_wn, N, K, EPW: tl.constexpr, SPLIT_K: tl.constexpr,
              BLOCK_N: tl.constexpr, SL: tl.constexpr, ROW_TILES: tl.constexpr, TILES: tl.constexpr):
    """moe_slab_kernel's L2 prefetch of its program's first TILES weight tiles (see PREFETCH there)."""
    n_tiles = tl.cdiv(K, SL * EPW)
    t_lo = pid_k * tl.cdiv(n_tiles, SPLIT_K)
    t_hi = tl.minimum(t_lo + tl.cdiv(n_tiles, SPLIT_K), n_tiles)
    if e >= 0:
        base = w_ptr + e.to(tl.int64) * stride_we
        if ROW_TILES:  # [tiles, N, SL] words: the program's rows of a tile are one block
            prefetch_row_tiles(base, t_lo, t_hi, N, pid_n, BLOCK_N, SL, TILES)
        elif (pid_n + 1) * BLOCK_N <= N:  # float weights [E, N, K]: SL weights of each row
            tl.static_assert(EPW == 1)
            rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            for i in tl.static_range(TILES):
                if t_lo + i < t_hi:
                    prefetch_rows_l2(base + rows.to(tl.int64) * stride_wn + (t_lo + i) * SL)


@triton.jit
def moe_slab_kernel(
        a_ptr, stride_am, as_ptr, stride_asm, st_s_ptr, st_zp_ptr, corr_ptr, stride_ce,
        w_ptr, stride_we, stride_wn, ws_ptr, stride_se, stride_sn,
        zp_ptr, stride_ze, stride_zn, gs_ptr, stride_ge, stride_gn,
        sorted_ids_ptr, block_expert_ptr, out_ptr, stride_om,
        N, K, num_pairs, top_k, tiny,
        GATE_UP: tl.constexpr, W_KIND: tl.constexpr, W_ZP: tl.constexpr, W_GS: tl.constexpr,
        W_SCALE: tl.constexpr, GROUP: tl.constexpr, BLOCK_N_W: tl.constexpr, BLOCK_K_W: tl.constexpr,
        A_KIND: tl.constexpr, A_FP8: tl.constexpr, A_GROUPED: tl.constexpr, A_GROUP: tl.constexpr,
        HALF_AWAY: tl.constexpr, DOT: tl.constexpr, TILE_SCALED: tl.constexpr, EVEN_K: tl.constexpr,
        EPW: tl.constexpr, SWAP: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SL: tl.constexpr,
        ROW_TILES: tl.constexpr = False, PDL: tl.constexpr = False, PREFETCH: tl.constexpr = 0):
    """PDL / PREFETCH (dsq_cuda.pdl): wait for the previous kernel first, or, with PREFETCH > 0, after
    prefetching the program's first PREFETCH weight tiles into L2 (row tiles: whole 4 KB pieces; float weights
    [E, N, K]: a ROW_PIECE segment per row and tile). The host passes PREFETCH only where the kernel before this
    one is not the alignment that wrote the blocks."""
    if PREFETCH == 0:
        wait_for_inputs(PDL)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    e = tl.load(block_expert_ptr + pid_m)
    if PREFETCH > 0:
        _prefetch(w_ptr, e, pid_n, pid_k, stride_we, stride_wn, N, K, EPW, SPLIT_K, BLOCK_N, SL, ROW_TILES, PREFETCH)
        wait_for_inputs(PDL)
    if e >= 0:
        e64 = e.to(tl.int64)
        pos = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids_ptr + pos)
        rmask = pair < num_pairs
        if A_KIND == 4:  # codes quantized once per padded position (moe_requant), read by position
            a_rows = pos
        elif GATE_UP:
            a_rows = pair // top_k
        else:
            a_rows = pair
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = cols < N
        offs = tl.arange(0, SL)
        st_s = 1.0
        st_zp = 0.0
        if A_KIND == 3 or A_KIND == 4:
            st_s = tl.load(st_s_ptr + e64)
            st_zp = tl.load(st_zp_ptr + e64).to(tl.float32)
        ACC_T: tl.constexpr = tl.int32 if (DOT == 1 and not TILE_SCALED) else tl.float32
        if SWAP:  # accumulate out^T = W^T-tile @ a^T: the weight is the MMA's A operand (registers)
            acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC_T)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC_T)
        BK: tl.constexpr = SL * EPW
        n_tiles = tl.cdiv(K, BK)
        per_split = tl.cdiv(n_tiles, SPLIT_K)
        t_lo = pid_k * per_split
        t_hi = tl.minimum(t_lo + per_split, n_tiles)
        wbase = w_ptr + e64 * stride_we + cols[None, :].to(tl.int64) * stride_wn
        for t in range(t_lo, t_hi):
            k0 = t * BK
            if ROW_TILES:  # the one-token GEMV's row tiles [tiles, N, SL] (stride_wn = SL): the same words
                words = tl.load(wbase + t * N * SL + offs[:, None], mask=nmask[None, :], other=0)  # < 2**31 words
            elif EPW > 1:  # slab words: K is padded to whole tiles, only N needs a mask
                words = tl.load(wbase + (t * SL + offs)[:, None], mask=nmask[None, :], other=0)
            else:
                ks = k0 + offs
                words = tl.load(wbase + ks[:, None], mask=(ks < K)[:, None] & nmask[None, :], other=0)
            for j in tl.static_range(EPW):
                kj = k0 + j * SL
                # the last tile may run past K (slab layouts pad K to whole tiles): its activations load as 0,
                # but scale/zero-point columns past the last group do not exist, so look them up at a clamped
                # position (0 x a finite scale = 0; an out-of-bounds read could be inf/NaN or fault)
                kc = tl.minimum(kj, K - 1)
                a = load_a(a_ptr, a_rows, rmask, offs, kj, K, stride_am, as_ptr, stride_asm, st_s, st_zp,
                           A_KIND, A_FP8, A_GROUPED, A_GROUP, HALF_AWAY, DOT, EVEN_K, tiny)
                w = _slab(words, j, zp_ptr, gs_ptr, e64, cols, nmask, kc // GROUP, stride_ze, stride_zn,
                          stride_ge, stride_gn, W_KIND, W_ZP, W_GS, DOT)
                if SWAP:
                    lhs = tl.trans(w)
                    rhs = tl.trans(a)
                else:
                    lhs = a
                    rhs = w
                if DOT == 1:
                    part = tl.dot(lhs, rhs, out_dtype=tl.int32)
                elif DOT == 5:
                    part = tl.dot(lhs, rhs, input_precision="ieee")
                else:
                    part = tl.dot(lhs, rhs)
                if TILE_SCALED:
                    if A_GROUPED:
                        sa = a_group_scale(as_ptr, a_rows, rmask, kc, stride_asm, A_KIND, A_FP8, A_GROUP, tiny)
                    else:
                        sa = tl.full([BLOCK_M], 1.0, tl.float32)
                    if W_SCALE == 2 or W_SCALE == 3:
                        sw = w_tile_scale(ws_ptr, e64, cols, kc, N, stride_se, stride_sn, W_SCALE, GROUP,
                                          BLOCK_N_W, BLOCK_K_W)
                    else:
                        sw = tl.full([BLOCK_N], 1.0, tl.float32)
                    if SWAP:
                        acc += part.to(tl.float32) * sw[:, None] * sa[None, :]
                    else:
                        acc += part.to(tl.float32) * sa[:, None] * sw[None, :]
                else:
                    acc += part
        if SWAP:
            acc = tl.trans(acc)
        if A_KIND == 3 or A_KIND == 4:  # (qx - zx) @ q = qx @ q - zx * sum_k q: the offset belongs to split 0 only
            corr = tl.load(corr_ptr + e64 * stride_ce + cols, mask=nmask, other=0)
            acc = acc - (tl.where(pid_k == 0, st_zp, 0.0).to(tl.int32) * corr)[None, :]
        out = acc.to(tl.float32)
        if W_SCALE == 1:
            out = out * w_channel_scale(ws_ptr, e64, cols, N, stride_se, stride_sn)[None, :]
        if (A_KIND == 1 or A_KIND == 2) and not A_GROUPED:
            out = out * row_scale(as_ptr, a_rows, rmask, stride_asm, A_KIND, A_FP8, tiny)[:, None]
        if A_KIND == 3 or A_KIND == 4:
            out = out * st_s
        dst = out_ptr + pair[:, None].to(tl.int64) * stride_om + cols[None, :]
        omask = rmask[:, None] & nmask[None, :]
        if SPLIT_K > 1:
            tl.atomic_add(dst, out, mask=omask, sem="relaxed")  # unordered: the kernel's end orders them
        else:
            tl.store(dst, out, mask=omask)


@triton.jit
def swiglu_kernel(h_ptr, out_ptr, I, stride_h, stride_o, OUT_KIND: tl.constexpr, BLOCK: tl.constexpr,
                  TILE_EPW: tl.constexpr = 0, TILE_SW: tl.constexpr = 0, PDL: tl.constexpr = False):
    """``out[p, n] = round(silu(round(h[p, n])) * round(h[p, I + n]))``, rounding to the output dtype
    (OUT_KIND as in round_to), silu(g) = g / (1 + exp(-g)) in float32. TILE_SW > 0 stores column n where
    dsq_cuda.slab.tile_order(bits = 32 / TILE_EPW, sw = TILE_SW) puts it (the one-token GEMV's input order):
    ``n = t*LBK + EPW*s + j`` goes to ``t*LBK + j*SW + s``. PDL: dsq_cuda.pdl."""
    wait_for_inputs(PDL)
    p = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < I
    a = swiglu_values(h_ptr + p * stride_h, cols, m, I, OUT_KIND)
    dest = cols
    if TILE_SW > 0:
        r = cols % (TILE_EPW * TILE_SW)
        dest = cols - r + (r % TILE_EPW) * TILE_SW + r // TILE_EPW
    tl.store(out_ptr + p * stride_o + dest, a.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def combine_kernel(o_ptr, w_ptr, y_ptr, H, stride_o, stride_y, TOP_K: tl.constexpr, OUT_KIND: tl.constexpr,
                   BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    """``y[t, n] = round(sum_j w[t, j] * round(o[t * TOP_K + j, n]))``: each expert's float32 output rounded to
    the output dtype (OUT_KIND as in round_to) before its routing weight (the reference's order), the products
    summed in float32 over j = 0..TOP_K-1 in order, the sum rounded last. One kernel for what took five torch
    ops (cast, widen, multiply, sum, cast). PDL: dsq_cuda.pdl."""
    wait_for_inputs(PDL)
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        wj = tl.load(w_ptr + t * TOP_K + j).to(tl.float32)
        acc += round_to(tl.load(o_ptr + (t * TOP_K + j) * stride_o + cols, mask=m, other=0.0), OUT_KIND) * wj
    tl.store(y_ptr + t * stride_y + cols, round_to(acc, OUT_KIND).to(y_ptr.dtype.element_ty), mask=m)


__all__ = ["combine_kernel", "moe_slab_kernel", "swiglu_kernel", "triton"]
