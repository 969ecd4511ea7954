"""Decode GEMM for packed int4/int8 weights at small M (1 to 64 tokens) on tensor cores, weights as operand A.

``y[M, N] = x @ W^T`` is computed as ``y^T = W @ x^T``: a program owns BLOCK_N weight rows (the MMA's M side,
64 or more) and all BLOCK_M tokens (the MMA's N side, 16 at M <= 16), so the few tokens of a decode step do
not waste a 64-row MMA tile, and the decoded weights go from registers straight into the MMA (Hopper's
wgmma takes operand A from registers) with no trip through shared memory.

Weights are in the pair-tile layout of :func:`dsq_cuda.slab.to_pair_tiles`: a ``[BLOCK_N, SL]`` word tile
holds EPW fields, and field f is the ``[BLOCK_N, SL]`` weight slab that multiplies the contiguous inputs
``t*LBK + f*SL + [0, SL)``. Two adjacent inputs of a field sit in one word at bits ``4f'`` and ``4f' + 16``,
so the decode makes both a bf16x2 (or f16x2) register with one shift and one ``lop3``:

    raw = ((w >> 4f') & 0x000F000F) | 0x43004300     (bf16 pair; f16: 0x64006400)
        = B + nibble   exactly, B = 128 (bf16) or 1024 (f16), both halves at once
    int4  a = raw - (B + 8 + zp)          = q - zp, exact (|q - zp| <= 15; one packed subtraction)
    int8  a = raw_lo + fma(raw_hi, 16, -(17 B + 128))  = 16 hi + lo - 128 = q, exact (two packed FMAs; every
          intermediate is an integer the 16-bit float represents exactly)

``a`` is the exact integer code (DOT_FIELDS consecutive fields side by side, ``[BLOCK_N, DOT_FIELDS * SL]``,
for one MMA chain), the MMA multiplies it by x (bf16/f16, or the int8 / fp8 e4m3 values of a
quantized activation, both exact in bf16) with float32 accumulation, so products are exact and only the
accumulation order differs from the reference. Scales:
    GROUP_SCALE  part = sum over the group's fields (within one tile) of the MMA; acc += part * s[n, g] (float
                 weight_scale, or the integer s2 of W4A8's two-level scheme, exact in float32)
    otherwise    acc = sum of all fields; the channel scale multiplies in the epilogue
    epilogue     y = acc * s_channel[n] (when per channel / two-level s1) * xs[m] (quantized activations) + bias
Split-K (SPLIT_K > 1) and stream-K (STREAM) programs share a row block's K tiles; their float32 partial sums
meet in a workspace and the last program finishes the block (FIXUP), or atomically in a zeroed float32 output.

ASM = False decodes with plain Triton ops (reshape/split/join, no inline PTX): the path of the Triton
interpreter (CPU CI), which cannot run inline assembly. Both give the same values.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda.int4_int8_mma import int8_mma_tiles
from dsq_cuda.pair_decode import decode_field, decode_fields
from dsq_cuda.pdl import prefetch_row_tiles, wait_for_inputs

# activation modes (the subset of dsq_cuda.mm_kernel's that this kernel serves): ACT_INT8_TOKEN reads x as
# per-token codes of any dtype that holds them exactly (int8, or bf16: dsq_cuda.mm passes the int8 / e4m3 codes
# of W4A8 / W4AFP8 as bf16, which spares the inner loop a conversion), ACT_FP8_TOKEN e4m3 codes as uint8 bits
ACT_FLOAT, ACT_INT8_TOKEN, ACT_FP8_TOKEN = 0, 1, 3


@triton.jit
def _mma_step(a, xf, part, acc, rows, nmask, wz_ptr, ws_ptr, NG, g, FLUSH: tl.constexpr, BITS: tl.constexpr,
              ASYM: tl.constexpr, ASM: tl.constexpr, B: tl.constexpr):
    """``part += (a - offset) @ xf^T``, where int4's offset is ``B + 8`` (+ the zero point of group g when ASYM),
    making ``a`` the exact code; at FLUSH the group's partial sum moves into ``acc`` times its scale s[n, g]."""
    if BITS == 4:
        if ASYM:
            zp = tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
            a = a - (B + 8 + zp).to(a.dtype)[:, None]
        else:
            a = a - (B + 8)
    if ASM:
        part += tl.dot(a, tl.trans(xf))
    else:
        part += tl.dot(a, tl.trans(xf), input_precision="ieee")
    if FLUSH:
        s = tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
        acc += part * s[:, None]
        part = tl.zeros_like(part)
    return part, acc


@triton.jit
def _epilogue(y, rows, nmask, xrow, mmask, xs_ptr, wc_ptr, bias_ptr, with_bias, ACT: tl.constexpr,
              CHANNEL_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``y * s_channel[n] * xs[m] + bias[n]`` (each factor where the scheme has it; bias only where
    ``with_bias``: one of the programs that share a row block adds it)."""
    if CHANNEL_SCALE:
        y = y * tl.load(wc_ptr + rows, mask=nmask, other=0.0)[:, None]
    if ACT != 0:
        y = y * tl.load(xs_ptr + xrow, mask=mmask, other=0.0)[None, :]
    if HAS_BIAS:
        b = tl.load(bias_ptr + rows, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(with_bias, 1.0, 0.0) * b[:, None]
    return y


@triton.jit
def mma_decode_kernel(x_ptr, xs_ptr, w_ptr, ws_ptr, wc_ptr, wz_ptr, bias_ptr, out_ptr, M, N, K, KW, NG,
                      stride_xm, stride_om, ids_ptr, bexp_ptr, stride_we, stride_se, stride_ce,
                      G: tl.constexpr, BITS: tl.constexpr, ACT: tl.constexpr, ASYM: tl.constexpr,
                      GROUP_SCALE: tl.constexpr, CHANNEL_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
                      SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SL: tl.constexpr,
                      F16: tl.constexpr, ASM: tl.constexpr, EVEN_K: tl.constexpr, MOE: tl.constexpr = False,
                      X_DIV: tl.constexpr = 1, STREAM: tl.constexpr = False, FIXUP: tl.constexpr = False,
                      sum_ptr=None, count_ptr=None, X_AHEAD: tl.constexpr = True,
                      DOT_FIELDS: tl.constexpr = 1, ROW_TILES: tl.constexpr = False, I8: tl.constexpr = 0,
                      PDL: tl.constexpr = False, PREFETCH: tl.constexpr = 0, SLOTS: tl.constexpr = 0):
    """``ws``: per-group scales [N, NG] (float, or int8 s2 for two-level) when GROUP_SCALE; ``wc``: per-channel
    scales [N] (float32) when CHANNEL_SCALE; ``wz``: int8 zero points [N, NG] when ASYM; ``xs``: per-row
    activation scales for ACT != 0. ``KW``: words per row of the pair-tile layout. EVEN_K: K % LBK == 0.
    ROW_TILES (int4, MOE mode): the words are the one-token GEMV's row tiles ``[tiles, N, SL]``
    (dsq_cuda.slab.to_row_tiles, one scale group a tile) instead of pair tiles ``[N, tiles * SL]``, and x is
    in the matching K order (dsq_cuda.slab.pair_order): field F of a word tile then decodes, element by
    element, codes whose activations sit at ``t*LBK + F*SL + [0, SL)`` of the reordered x, so the same decode
    and MMAs compute the same sums, and the fused MoE holds one device copy of its experts' codes, not two.
    X_AHEAD: each field's x slab is loaded one field ahead by hand; False leaves its scheduling to Triton's
    pipeliner, which then keeps a whole tile of weights in flight (at 3 stages its wait at the loop top is
    ``DEPBAR.LE 9``, the next tile's 9 copy groups, where X_AHEAD's is ``LE 8``: not the next weight tile).
    False was faster in every lab cell on the H200 (docs/benchmarks/cuda.md v10) and is the default
    wherever a program pipelines 2 or more K tiles (dsq_cuda.mm.MMA_X_AHEAD).
    I8 (int4 row tiles of SL = 16 words, scale groups of whole tiles): the int8 tensor cores instead of bf16
    (dsq_cuda.int4_int8_mma.int8_mma_tiles): 1 for int8 x (ACT_INT8_TOKEN, integer group scales: W4A8's exact
    integer sums), 4 for x as four int8 slices (dsq_cuda.act_quant.int8_slices: W4A16, W4AFP8; float scales).
    DOT_FIELDS (needs X_AHEAD False): fields decoded, joined along K and multiplied in one ``tl.dot``, a run
    that stays inside one scale group (dsq_cuda.mm.mma_dot_fields). Triton waits for the tensor cores after
    every ``tl.dot``, so 4 fields a chain wait 2 times a tile instead of 8 (cuda.md v11). On this path x columns
    past M read zeros (a masked copy reads no memory); with one field a chain they read the last token.

    Who does what. Default: program (i, j, b) owns row block i, the j-th of SPLIT_K runs of K tiles and (dense)
    tokens ``[b BLOCK_M, (b + 1) BLOCK_M)``: more than one token block (prefill) only without FIXUP, whose
    workspace holds one.
    STREAM (stream-K, dense only): the grid is one axis of P programs (a few per SM, all resident at once), and
    the ``row blocks x K tiles`` units, row block by row block, are cut into P equal runs, so no SM idles
    through a last partial wave; a run covers the end of one row block and the start of the next.

    How partial sums meet. SPLIT_K = 1 without STREAM: stored directly. FIXUP (needs ``sum`` [BLOCK_M, N]
    float32 and ``count`` [row blocks] int32, both zero): each program adds its float32 sum of a row block
    atomically into ``sum`` and the number of tiles it summed into ``count``; the program whose tiles complete
    the block reads ``sum``, zeroes it, applies the epilogue, writes ``out`` in its own dtype and zeroes
    ``count`` for the next call, so the caller neither zeroes nor casts a buffer (two kernels fewer a call).
    FIXUP with SLOTS > 0 (``sum`` [SLOTS, BLOCK_M, N], any contents; torch.use_deterministic_algorithms): each
    program stores its sum in slot ``split index`` (stream-K: its rank among the block's programs) and the
    completing program adds slots 0, 1, ... in that order, so the bits never depend on arrival order.
    Otherwise (MOE with SPLIT_K > 1): partial sums go atomically into a zeroed float32 ``out``.

    MOE (the fused MoE layer's grouped GEMMs, dsq_cuda.moe_decode): program axis 2 is block b of the
    expert-sorted pairs of dsq_cuda.moe_align; its BLOCK_M columns are the pairs ``ids[b*BLOCK_M + i]`` (M =
    the number of pairs P marks padding) of expert ``bexp[b]`` (-1: no block, the program does nothing),
    whose weights / group scales / channel scales are ``stride_we`` words / ``stride_se`` / ``stride_ce``
    elements after expert 0's. Pair p reads x row ``p // X_DIV`` (its token for gate/up, itself for down)
    and writes output row p.

    PDL (dsq_cuda.pdl): wait for the previous kernel's writes first thing; or, with PREFETCH > 0 (row tiles,
    not STREAM), after prefetching the program's first PREFETCH weight tiles (of the block's expert) into L2.
    In MOE mode the host passes PREFETCH only where the kernel before this one is not the alignment that wrote
    the blocks."""
    if PREFETCH == 0:
        wait_for_inputs(PDL)
    offs_m = tl.arange(0, BLOCK_M)
    offs_s = tl.arange(0, SL)
    tiles = KW // SL
    if STREAM:  # this program's units: K tile u - b * tiles of row block b, for u in [u_lo, u_hi)
        units = tl.cdiv(N, BLOCK_N) * tiles
        u_lo = (tl.program_id(0) * units) // tl.num_programs(0)
        u_hi = ((tl.program_id(0) + 1) * units) // tl.num_programs(0)
    else:  # K tiles [t_lo, t_hi) of row block program_id(0)
        per = tl.cdiv(tiles, SPLIT_K)
        t_lo = tl.program_id(1) * per
        t_hi = tl.minimum(t_lo + per, tiles)
    if MOE:
        pid_b = tl.program_id(2)
        e = tl.load(bexp_ptr + pid_b)
        orow = tl.load(ids_ptr + pid_b * BLOCK_M + offs_m)
        mmask = orow < tl.where(e >= 0, M, 0)  # padding slots hold M; a block without an expert holds nothing
        xrow = tl.where(mmask, orow // X_DIV, 0)
        t_hi = tl.where(e >= 0, t_hi, t_lo)  # no block: no K loop, nothing stored
        e64 = tl.maximum(e, 0).to(tl.int64)
        w_ptr += e64 * stride_we
        ws_ptr += e64 * stride_se
        wc_ptr += e64 * stride_ce
    else:  # program axis 2 (split-K grid only): the BLOCK_M tokens from row program_id(2) * BLOCK_M (prefill)
        orow = tl.program_id(2) * BLOCK_M + offs_m
        mmask = orow < M
        # rows past M read the last token where x is loaded a field at a time (in bounds, so those loads need no
        # mask); the chained path (DOT_FIELDS > 1) masks them instead. Never stored
        xrow = tl.minimum(orow, M - 1)
    if PREFETCH > 0:  # read before the wait: the host launches it so that the weights (and in MOE mode the
        # expert ids and blocks) were written before the kernel this one follows (dsq_cuda.pdl)
        tl.static_assert(ROW_TILES and not STREAM)
        # (a block without an expert has t_hi = t_lo: nothing to prefetch)
        prefetch_row_tiles(w_ptr, t_lo, t_hi, N, tl.program_id(0), BLOCK_N, SL, PREFETCH)
        wait_for_inputs(PDL)
    xrows = x_ptr + xrow[:, None].to(tl.int64) * stride_xm  # [BLOCK_M, 1]: each column's x row
    xbase = xrows + offs_s[None, :]
    args = (xrows, xbase, xs_ptr, w_ptr, ws_ptr, wc_ptr, wz_ptr, bias_ptr, out_ptr, sum_ptr, count_ptr, tiles, N, K, KW,
            NG, stride_om, orow, xrow, mmask, offs_s)
    if STREAM:  # the end of one row block and the start of the next (or more)
        pid, progs = tl.program_id(0), tl.num_programs(0)
        for blk in range(u_lo // tiles, tl.cdiv(u_hi, tiles)):
            # SLOTS: the programs that share row block blk are p0..p1 (those whose runs hold its first and last
            # unit: p owns [p units // P, (p + 1) units // P)), and p's partial sum goes to slot p - p0
            p0 = ((blk * tiles + 1) * progs + units - 1) // units - 1
            p1 = ((blk + 1) * tiles * progs + units - 1) // units - 1
            _row_block(blk, tl.maximum(u_lo - blk * tiles, 0), tl.minimum(u_hi - blk * tiles, tiles), pid - p0,
                       p1 - p0 + 1, *args, G, BITS, ACT, ASYM, GROUP_SCALE, CHANNEL_SCALE, HAS_BIAS, SPLIT_K, BLOCK_M,
                       BLOCK_N, SL, F16, ASM, EVEN_K, FIXUP, X_AHEAD, DOT_FIELDS, ROW_TILES, I8, SLOTS)
    else:  # no loop around a single row block: the K loop compiles as tight as it can
        # (SLOTS: split j's partial sum goes to slot j; the splits that hold tiles are the first cdiv(tiles, per))
        _row_block(tl.program_id(0), t_lo, t_hi, tl.program_id(1), tl.cdiv(tiles, per), *args, G, BITS, ACT, ASYM,
                   GROUP_SCALE, CHANNEL_SCALE, HAS_BIAS, SPLIT_K, BLOCK_M, BLOCK_N, SL, F16, ASM, EVEN_K, FIXUP,
                   X_AHEAD, DOT_FIELDS, ROW_TILES, I8, SLOTS)


@triton.jit
def _row_block(blk, t_lo, t_hi, slot, nslots, xrows, xbase, xs_ptr, w_ptr, ws_ptr, wc_ptr, wz_ptr, bias_ptr, out_ptr, sum_ptr, count_ptr,
               tiles, N, K, KW, NG, stride_om, orow, xrow, mmask, offs_s, G: tl.constexpr, BITS: tl.constexpr,
               ACT: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr, CHANNEL_SCALE: tl.constexpr,
               HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               SL: tl.constexpr, F16: tl.constexpr, ASM: tl.constexpr, EVEN_K: tl.constexpr, FIXUP: tl.constexpr,
               X_AHEAD: tl.constexpr, DOT_FIELDS: tl.constexpr, ROW_TILES: tl.constexpr, I8: tl.constexpr,
               SLOTS: tl.constexpr):
    """K tiles ``[t_lo, t_hi)`` of row block ``blk``: their sum, finished or handed on (FIXUP with SLOTS: as
    partial sum ``slot`` of the block's ``nslots`` <= SLOTS, the slots of the workspace)."""
    EPW: tl.constexpr = 32 // BITS  # fields per tile
    LBK: tl.constexpr = EPW * SL  # inputs per tile
    FPG: tl.constexpr = G // SL  # fields per scale group
    B: tl.constexpr = 1024 if F16 else 128
    DT: tl.constexpr = tl.float16 if F16 else tl.bfloat16
    rows = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rows < N
    if ROW_TILES:  # [tiles, N, SL]: rows SL words apart, tiles N * SL apart
        wbase = w_ptr + rows[:, None].to(tl.int64) * SL + offs_s[None, :]
        w_step = N * SL
    else:  # [N, tiles * SL]
        wbase = w_ptr + rows[:, None].to(tl.int64) * KW + offs_s[None, :]
        w_step = SL
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    part = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    # x of the next field is loaded one field ahead (fields are consecutive in K, so "next" is always
    # k0 + SL): the load's latency then overlaps the decode and MMA of the current field. EVEN_K: no K
    # mask; the prefetch after the last field of the last tile re-reads the last slab instead of running
    # past K
    if X_AHEAD:
        if EVEN_K:
            xn = tl.load(xbase + t_lo * LBK)
        else:
            xn = tl.load(xbase + t_lo * LBK, mask=(t_lo * LBK + offs_s)[None, :] < K, other=0)
    n_t = t_hi - t_lo  # (taken before the loop: ptxas then gives the fixup's kernel fewer registers)
    if I8:  # the int8 tensor cores (dsq_cuda.int4_int8_mma)
        tl.static_assert(BITS == 4 and ROW_TILES and SL == 16)
        acc = int8_mma_tiles(wbase, w_step, xrows, t_lo, t_hi, rows, nmask, mmask, ws_ptr, NG, G, GROUP_SCALE,
                             BLOCK_N, BLOCK_M, ASM, I8)
        part = acc
    elif DOT_FIELDS > 1:
        # one MMA chain per run of DOT_FIELDS fields (consecutive inputs of one scale group): the warps wait
        # for the tensor cores once per run instead of once per field
        tl.static_assert(not X_AHEAD)
        tl.static_assert(EPW % DOT_FIELDS == 0)
        tl.static_assert((LBK % G == 0 and FPG % DOT_FIELDS == 0) or G % LBK == 0)  # a run stays in one group
        offs_r = tl.arange(0, DOT_FIELDS * SL)
        xrun = xrows + offs_r[None, :]
        for t in range(t_lo, t_hi):
            words = tl.load(wbase + t * w_step, mask=nmask[:, None], other=0)
            for r in tl.static_range(EPW // DOT_FIELDS):
                k0 = t * LBK + r * DOT_FIELDS * SL
                # columns past M (and MoE padding) read zeros: a masked copy reads no memory. Reading the last
                # token there instead made M = 1 about 1.6x slower than M = 16 on the H200 (lab, cuda.md v11)
                if EVEN_K:
                    xf = tl.load(xrun + k0, mask=mmask[:, None], other=0)
                else:
                    xf = tl.load(xrun + k0, mask=mmask[:, None] & ((k0 + offs_r)[None, :] < K), other=0)
                if ACT == 3:
                    xf = xf.to(tl.float8e4nv, bitcast=True)
                xf = xf.to(DT) if ASM else xf.to(tl.float32)
                a = decode_fields(words, r * DOT_FIELDS, DOT_FIELDS, BITS, F16, ASM, BLOCK_N, SL)
                g = tl.minimum(k0 // G, NG - 1)
                if LBK % G == 0:  # the run ends its group, or (a group spans tiles) the tile
                    flush = GROUP_SCALE and ((r + 1) * DOT_FIELDS) % FPG == 0
                else:
                    flush = GROUP_SCALE and r == EPW // DOT_FIELDS - 1
                part, acc = _mma_step(a, xf, part, acc, rows, nmask, wz_ptr, ws_ptr, NG, g, flush, BITS, ASYM, ASM, B)
    else:
        for t in range(t_lo, t_hi):
            words = tl.load(wbase + t * w_step, mask=nmask[:, None], other=0)
            for f in tl.static_range(EPW):
                k0 = t * LBK + f * SL
                if X_AHEAD:
                    xf = xn
                    if EVEN_K:
                        xn = tl.load(xbase + tl.minimum(k0 + SL, K - SL))
                    else:
                        xn = tl.load(xbase + (k0 + SL), mask=(k0 + SL + offs_s)[None, :] < K, other=0)
                elif EVEN_K:
                    xf = tl.load(xbase + k0)
                else:
                    xf = tl.load(xbase + k0, mask=(k0 + offs_s)[None, :] < K, other=0)
                if ACT == 3:  # fp8 activations travel as uint8 bits (masked lanes: +0.0)
                    xf = xf.to(tl.float8e4nv, bitcast=True)
                # exact: int8 and e4m3 values are bf16 values; the interpreter path stays in float32
                xf = xf.to(DT) if ASM else xf.to(tl.float32)
                a = decode_field(words, f, BITS, F16, ASM, BLOCK_N, SL)
                g = tl.minimum(k0 // G, NG - 1)  # padding past K reads the last group (x is 0 there)
                # flush the group's partial sum at its last field in this tile. Groups that hold whole tiles
                # flush at every tile end (the same scale multiplies each tile's part); groups that neither
                # divide nor hold whole tiles (e.g. 96 with LBK = 256) flush every field (SL | G)
                if LBK % G == 0:
                    flush = GROUP_SCALE and (f + 1) % FPG == 0
                elif G % LBK == 0:
                    flush = GROUP_SCALE and f == EPW - 1
                else:
                    flush = GROUP_SCALE
                part, acc = _mma_step(a, xf, part, acc, rows, nmask, wz_ptr, ws_ptr, NG, g, flush, BITS, ASYM, ASM, B)
    y = acc if GROUP_SCALE else part
    if FIXUP:
        omask = nmask[:, None] & mmask[None, :]
        optr = out_ptr + orow[None, :].to(tl.int64) * stride_om + rows[:, None]
        if n_t > 0:  # a split past the last tile has nothing to add (and must not finish the block)
            srow = orow[None, :] * N + rows[:, None]  # [BLOCK_N, BLOCK_M] offsets in one slot [BLOCK_M, N]
            if SLOTS:  # this program's partial sum in its own slot, summed in slot order below
                tl.store(sum_ptr + slot * BLOCK_M * N + srow, y, mask=omask)
            else:  # relaxed: fire-and-forget reductions (REDG), no fence per thread
                tl.atomic_add(sum_ptr + srow, y, mask=omask, sem="relaxed")
            # the CTA barrier, then the count's acq_rel atomic at gpu scope (cumulative over what the barrier
            # ordered before it) publish the partial sums: the pattern of a split-K semaphore (barrier, then
            # one release by one thread)
            tl.debug_barrier()
            done = tl.atomic_add(count_ptr + blk, n_t) + n_t
            if done == tiles:  # this program completed the row block: finish it
                if SLOTS:  # slot 0 + slot 1 + ... in that order, whichever program arrived last: the same
                    # bits every call (float addition is not associative, so arrival order would show). The
                    # loads are unrolled over the workspace's SLOTS and masked past nslots, so they are all in
                    # flight at once: a loop over nslots waited for each in turn (up to 23% slower at split 8-14)
                    total = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                    for j in tl.static_range(SLOTS):
                        has_j = omask & (tl.zeros_like(srow) + j < nslots)
                        part_j = tl.load(sum_ptr + j * BLOCK_M * N + srow, mask=has_j, other=0.0,
                                         cache_modifier=".cg")  # L2, where the other programs' stores landed
                        total = tl.where(has_j, total + part_j, total)
                else:
                    total = tl.load(sum_ptr + srow, mask=omask, other=0.0, cache_modifier=".cg")
                    # the zeroing below may run in another thread than the load of the same element (Triton
                    # lays the two out differently when M is not a multiple of 16): every load must be done
                    # before any zero is written. Without this barrier the H200 gave wrong outputs (a warp's
                    # columns of a row block, in 1-13 of 15-25 calls at M = 4 / 5 / 8; cuda.md v11,
                    # h200_v11_lab_race_where.json)
                    tl.debug_barrier()
                    tl.store(sum_ptr + srow, tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32), mask=omask)
                total = _epilogue(total, rows, nmask, xrow, mmask, xs_ptr, wc_ptr, bias_ptr, True, ACT,
                                  CHANNEL_SCALE, HAS_BIAS)
                tl.store(optr, total.to(out_ptr.dtype.element_ty), mask=omask)
                tl.atomic_xchg(count_ptr + blk, 0)
    else:
        omask = nmask[:, None] & mmask[None, :]
        optr = out_ptr + orow[None, :].to(tl.int64) * stride_om + rows[:, None]
        y = _epilogue(y, rows, nmask, xrow, mmask, xs_ptr, wc_ptr, bias_ptr, t_lo == 0, ACT, CHANNEL_SCALE,
                      HAS_BIAS)
        if SPLIT_K > 1:
            tl.atomic_add(optr, y, mask=omask, sem="relaxed")  # unordered: the kernel's end orders them
        else:
            tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=omask)
