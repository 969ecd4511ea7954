"""The tensor-core decode GEMM of :mod:`dsq_cuda.mma_decode_kernel`, written in Gluon so its MMAs overlap.

Same math, layout and arguments as ``mma_decode_kernel`` (read its docstring first): ``y^T = W @ x^T``, the
decoded int4/int8 codes of a pair-tile word tile are the register operand A of Hopper's wgmma, x^T is
operand B. What Gluon adds is control over the order of work, which Triton's own pipeliner does not give
for a register operand (it waits for every such MMA to finish before the next field is decoded):

* x is staged once: a program copies its whole K range of x^T (``[KX, BLOCK_M]``, at most 64 KiB) into
  shared memory before its loop, so every field's MMA reads a slice of it, with no per-field
  store / fence / barrier;
* MMAs are asynchronous: field f's wgmma is issued, then field f+1 is decoded while it runs; the kernel
  waits only until at most ``DEPTH`` MMAs are in flight (their register operands stay alive until then);
* group scales keep products exact: each scale group's fields accumulate into a fresh float32 ``part``
  (the first MMA of a group starts from zero), and the previous group's ``part`` is folded into
  ``acc += part * s[n, g]`` once it has completed, which happens while the current group's MMAs run;
* the next tile's weight words are loaded while the current tile is decoded (one tile ahead).

Limits (the host falls back to the Triton kernel otherwise, see dsq_cuda.mm): a real Hopper GPU (Gluon has no
interpreter), BLOCK_M <= 16, K a multiple of the tile (EVEN_K), groups that either hold whole tiles or divide
a tile, not the MoE mode. BLOCK_N = 64 per warpgroup (one m64 wgmma row block per 4 warps).
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from dsq_cuda.mma_decode_kernel import _ASM_I4_BF16, _ASM_I4_F16, _ASM_I8_BF16, _ASM_I8_F16


@gluon.jit
def _decode(words, F: gl.constexpr, BITS: gl.constexpr, F16: gl.constexpr):
    """Field F of a word tile as exact 16-bit floats (the PTX of mma_decode_kernel, in the words' layout)."""
    if BITS == 4:
        if F16:
            out = gl.inline_asm_elementwise(_ASM_I4_F16[F], "=r,r,r", [words], dtype=gl.float16, is_pure=True, pack=2)
        else:
            out = gl.inline_asm_elementwise(_ASM_I4_BF16[F], "=r,r,r", [words], dtype=gl.bfloat16, is_pure=True,
                                            pack=2)
    else:
        if F16:
            out = gl.inline_asm_elementwise(_ASM_I8_F16[F], "=r,r,r", [words], dtype=gl.float16, is_pure=True, pack=2)
        else:
            out = gl.inline_asm_elementwise(_ASM_I8_BF16[F], "=r,r,r", [words], dtype=gl.bfloat16, is_pure=True,
                                            pack=2)
    return out


@gluon.jit
def mma_decode_gluon_kernel(x_ptr, xs_ptr, w_ptr, ws_ptr, wc_ptr, wz_ptr, bias_ptr, out_ptr, M, N, K, KW, NG,
                            stride_xm, stride_om,
                            G: gl.constexpr, BITS: gl.constexpr, ACT: gl.constexpr, ASYM: gl.constexpr,
                            GROUP_SCALE: gl.constexpr, CHANNEL_SCALE: gl.constexpr, HAS_BIAS: gl.constexpr,
                            SPLIT_K: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, SL: gl.constexpr,
                            F16: gl.constexpr, NT: gl.constexpr, DEPTH: gl.constexpr, U: gl.constexpr):
    """Arguments as mma_decode_kernel's (without the MoE ones). ``NT``: tiles per program's K range, at least
    ceil(tiles / SPLIT_K) (x^T of those tiles is staged in NT * LBK * BLOCK_M * 2 bytes of shared memory); ``DEPTH``: MMAs (fields) left in flight while decoding;
    ``U``: fields per scale unit (fields that share one scale: min(G / SL, EPW) with GROUP_SCALE, else EPW;
    a unit never straddles a tile)."""
    NW: gl.constexpr = gl.num_warps()
    EPW: gl.constexpr = 32 // BITS  # fields per tile
    LBK: gl.constexpr = EPW * SL  # inputs per tile
    B: gl.constexpr = 1024 if F16 else 128
    DT: gl.constexpr = gl.float16 if F16 else gl.bfloat16
    UPT: gl.constexpr = EPW // U  # scale units per tile
    LAST_U: gl.constexpr = min(U, DEPTH)  # MMAs left in flight at the end of a unit
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                  instr_shape=[16, BLOCK_M, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    row_a: gl.constexpr = gl.SliceLayout(1, a_layout)
    col_a: gl.constexpr = gl.SliceLayout(0, a_layout)
    row_c: gl.constexpr = gl.SliceLayout(1, mma)
    col_c: gl.constexpr = gl.SliceLayout(0, mma)
    x_layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[8, 1], threads_per_warp=[32, 1],
                                              warps_per_cta=[1, NW], order=[0, 1])
    xs_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([LBK, BLOCK_M], DT)

    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    tiles = KW // SL
    per = gl.cdiv(tiles, SPLIT_K)
    t_lo = pid_k * per
    t_hi = gl.minimum(t_lo + per, tiles)
    k_lo = t_lo * LBK

    # -- stage x^T[k_lo : k_lo + NT * LBK, :BLOCK_M] in shared memory (zeros past this program's range and past M)
    # one [LBK, BLOCK_M] buffer per tile, indexed by the tile's place in the range (a run-time index)
    xsm = gl.allocate_shared_memory(DT, [NT, LBK, BLOCK_M], xs_layout)
    xk = gl.arange(0, LBK, layout=gl.SliceLayout(1, x_layout))
    xm = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, x_layout))
    k_end = t_hi * LBK
    for j in gl.static_range(NT):
        kk = k_lo + j * LBK + xk
        ptrs = x_ptr + xm[None, :].to(gl.int64) * stride_xm + kk[:, None]
        xv = gl.load(ptrs, mask=(kk[:, None] < k_end) & (xm[None, :] < M), other=0)
        if ACT == 3:  # fp8 activations travel as uint8 bits
            xv = xv.to(gl.float8e4nv, bitcast=True)
        xsm.index(j).store(xv.to(DT))  # int8 / e4m3 values are exact in bf16
    fence_async_shared()
    gl.thread_barrier()

    rows_a = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=row_a)
    rows_c = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=row_c)
    nmask_a = rows_a < N
    nmask_c = rows_c < N
    offs_s = gl.arange(0, SL, layout=col_a)
    wbase = w_ptr + rows_a[:, None].to(gl.int64) * KW + offs_s[None, :]
    zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=mma)
    acc = zero
    prev = zero  # the last unit's partial sum, folded once its MMAs have completed
    prev_s = gl.zeros([BLOCK_N], gl.float32, layout=row_c)
    words = gl.load(wbase + t_lo * SL, mask=nmask_a[:, None], other=0)
    for t in range(t_lo, t_hi):
        # one tile ahead (the last iteration re-reads its own tile: in bounds, never used)
        nxt = gl.load(wbase + gl.minimum(t + 1, t_hi - 1) * SL, mask=nmask_a[:, None], other=0)
        for u in gl.static_range(UPT):
            g = (t * LBK + u * U * SL) // G
            if GROUP_SCALE:
                s = gl.load(ws_ptr + rows_c * NG + g, mask=nmask_c, other=0).to(gl.float32)
            if ASYM:
                zp = gl.load(wz_ptr + rows_a * NG + g, mask=nmask_a, other=0).to(gl.float32)
                sub = (B + 8 + zp).to(DT)[:, None]
            part = zero
            for i in gl.static_range(U):
                a = _decode(words, u * U + i, BITS, F16)
                if BITS == 4:
                    if ASYM:
                        a = a - sub
                    else:
                        a = a - (B + 8)
                xb = xsm.index(t - t_lo).slice((u * U + i) * SL, SL, dim=0)
                if GROUP_SCALE:
                    # a unit's first MMA starts from zero: its part holds only this group's products
                    part = warpgroup_mma(a, xb, part, use_acc=i > 0, is_async=True)
                    if i >= DEPTH:
                        part = warpgroup_mma_wait(num_outstanding=DEPTH, deps=[part])
                else:
                    acc = warpgroup_mma(a, xb, acc, is_async=True)
                    if i >= DEPTH:
                        acc = warpgroup_mma_wait(num_outstanding=DEPTH, deps=[acc])
            if GROUP_SCALE:
                # MMAs complete in order: once at most this unit's last min(U, DEPTH) are in flight, the
                # previous unit's part is final; fold it while they run
                part, prev = warpgroup_mma_wait(num_outstanding=LAST_U, deps=[part, prev])
                acc += prev * prev_s[:, None]
                prev = part
                prev_s = s
        if not GROUP_SCALE:
            acc = warpgroup_mma_wait(num_outstanding=LAST_U, deps=[acc])
        words = nxt
    if GROUP_SCALE:
        prev = warpgroup_mma_wait(num_outstanding=0, deps=[prev])
        y = acc + prev * prev_s[:, None]
    else:
        y = warpgroup_mma_wait(num_outstanding=0, deps=[acc])
    cols = gl.arange(0, BLOCK_M, layout=col_c)
    mmask = cols < M
    if CHANNEL_SCALE:
        y = y * gl.load(wc_ptr + rows_c, mask=nmask_c, other=0.0)[:, None]
    if ACT != 0:
        y = y * gl.load(xs_ptr + cols, mask=mmask, other=0.0)[None, :]
    if HAS_BIAS:
        b = gl.load(bias_ptr + rows_c, mask=nmask_c, other=0.0).to(gl.float32)
        y = y + gl.where(pid_k == 0, 1.0, 0.0) * b[:, None]
    optr = out_ptr + cols[None, :].to(gl.int64) * stride_om + rows_c[:, None]
    omask = nmask_c[:, None] & mmask[None, :]
    if SPLIT_K > 1:
        gl.atomic_add(optr, y, mask=omask)
    else:
        gl.store(optr, y.to(out_ptr.dtype.element_ty), mask=omask)


def supported(m: int, k: int, bits: int, sl: int, group: int, moe: bool = False) -> bool:
    """Whether this kernel serves a call (see the module docstring's limits); the caller checks the device."""
    lbk = (32 // bits) * sl
    if moe or m > 16 or k % lbk:
        return False
    return not group or group % lbk == 0 or (lbk % group == 0 and group % sl == 0)


def launch(x, xs, w, ws, wc, wz, bias, out, m: int, n: int, k: int, ng: int, *, group: int, bits: int, act: int,
           grouped: bool, channel: bool, split: int, warps: int, depth: int, block_m: int | None = None,
           sl: int = 32) -> None:
    """Run the kernel on ``out`` (float32 zeros when split > 1). Arguments as mma_decode_kernel's; ``group``
    is the scale group (0 or K: one unit per tile)."""
    epw = 32 // bits
    lbk = epw * sl
    tiles = w.shape[1] // sl
    split = max(1, min(split, tiles))
    nt = -(-tiles // split)
    g = group if grouped and group else lbk
    bm = block_m or (8 if m <= 8 else 16)
    mma_decode_gluon_kernel[(-(-n // (16 * warps)), split)](
        x, ws if xs is None else xs, w, ws, ws if wc is None else wc, ws if wz is None else wz,
        ws if bias is None else bias, out, m, n, k, w.shape[1], ng, x.stride(0),
        out.stride(0), G=g, BITS=bits, ACT=act, ASYM=wz is not None, GROUP_SCALE=grouped,
        CHANNEL_SCALE=channel, HAS_BIAS=bias is not None, SPLIT_K=split, BLOCK_M=bm, BLOCK_N=16 * warps, SL=sl,
        F16=x.dtype == torch.float16, NT=nt, DEPTH=depth, U=min(g // sl, epw) if grouped else epw, num_warps=warps)
