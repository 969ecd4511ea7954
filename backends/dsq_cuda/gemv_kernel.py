"""Decode kernel for packed int4/int8 weights at M = 1 (and one token of the fused MoE): CUDA cores, no MMA.

At one token the GEMM reads each weight byte once and does 2 flops per weight, so it is bound by how many
weight bytes are in flight and by the instructions spent per code. K is cut into tiles of ``LBK = EPW * SW``
inputs: SW words of a row (four 16-byte loads at SW = 16), and a thread owns whole rows of a ``[BLOCK_N, SW]``
word tile, so no value crosses threads until the end. Field j of a tile multiplies the SW *contiguous*
activations ``t*LBK + j*SW + [0, SW)``, the same for every row (one broadcast load per field). The words come
in one of two layouts:

* row tiles (:func:`dsq_cuda.slab.to_row_tiles`, ``[tiles, N, SW]``): word s of a tile holds in field j the
  code of input ``t*LBK + j*SW + s``, and a program's ``[BLOCK_N, SW]`` tile is one contiguous block. The
  default: the fastest on the H200 (cuda-moe.md v15);
* the canonical words themselves (``[N, KW]``, word c holds input ``EPW*c + i`` in field i; no device copy),
  with the activations in the *tile order* of :func:`dsq_cuda.slab.tile_order`, which puts input
  ``t*LBK + EPW*s + j`` at ``t*LBK + j*SW + s``. A scale group must then hold whole tiles (the host picks SW
  so), since a field's inputs span the tile. int8 codes one per byte in two's complement (W8A8's ``weight``
  read as words: SIGNED) become the offset-binary fields of packed int8 by one xor per word;
* a code becomes a float with bit operations, two ways (constexpr MANT):
    default   ``(u | 0x4B000000)`` read as float32 is exactly ``2**23 + u``; subtracting ``2**23 + 2**(b-1)
              + zp`` gives ``q - zp`` exactly, and one FMA adds ``x * (q - zp)`` (exact in float32) into a
              ``[BLOCK_N, SW]`` tile, summed over SW when a scale group ends and multiplied by its scale
              (channel scales: in the epilogue): ``y[n] = sum_g s[n, g] * sum_{k in g} x[k] * (q - zp)``;
    MANT      a shift and an and-or put u into the top mantissa bits of 1.0, ``f = 1 + u / 2**b`` exactly,
              and ``q - zp = 2**b * f - (2**b + 2**(b-1) + zp)``, so the FMA adds ``x * f`` and each group
              also needs ``sum x``: one instruction less per code (no subtraction), but float32 sums of
              ``x * f`` carry about ``2**b * 1.5 / E|q - zp|`` (6 for int4) times the product magnitude.
  On the H200 the default was faster for int4 (W4A16 7168x18432 at M = 1: 44.2 vs 46.8 us in two runs of
  benchmarks/cuda/run_gpu.py, 2026-11-29) and the two were within 2% for int8, so MANT stays a variant
  (MANT_DECODE below) for benchmarks. The only differences from the exact result are float32 summation order (and
  rounding of fp32 x products) and the final rounding.

Split-K (SPLIT_K > 1: the H200 sweep wants many programs in flight, up to 32 per output tile) adds float32
partial sums atomically into a zeroed buffer, or (SLOTS, under torch.use_deterministic_algorithms) stores each
in a slot of its own, which the last program of an output block adds in slot order. One program row per token
(grid axis 0 = M): for M > 1 the tiled tensor-core kernel is the better choice, and the dispatcher uses this
kernel at M = 1 only.

MOE: the same kernel serves a decode step of the fused MoE layer (dsq_cuda.moe_gemv) when every routed
expert sees one token: program row p is the (token, expert) pair p, whose weights are expert ``ids[p]`` of a
stacked layout (``stride_we`` words / ``stride_se`` scales apart) and whose x row is token ``p // X_DIV``;
pairs of experts outside ``[e_lo, e_hi)`` (another rank's, in expert parallelism) do nothing.

Quantized activations (MOE mode of W8A8, W8A8_DYNAMIC, W4A8_DYNAMIC, W4AFP8 at one token): x holds the codes
(int8 / e4m3 values, or static ``q - zp``; exact in bf16), so each product ``x * (q_w - zp_w)`` is an exact
integer and only float32 summation order differs from the integer sums of the reference; X_SCALE multiplies
row ``row // X_DIV``'s activation scale ``xs`` into y (1) or that of the pair's expert (2: static scales, MOE
mode only), and CHANNEL_SCALE (two-level weights, whose group scales ``ws`` are the integer s2) the
per-channel s1 ``wc``:
    y[n] = xs * s1[n] * sum_g s2[n, g] * sum_{k in g} x[k] * q[n, k]
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda.int4_int8_mma import int4_bytes
from dsq_cuda.pdl import prefetch_row_tiles, wait_for_inputs

#: the decode variant the dispatchers (dsq_cuda.mm, dsq_cuda.moe_gemv) pass as MANT (see above); benchmarks
#: set it to time the other variant
MANT_DECODE = False
#: int4 codes two at a time (PAIRS) where a scale group spans whole tiles (or scales are per channel): one
#: shift and one and-or put fields j and j + 4 of a word into a bf16 pair ``(128 + u_j, 128 + u_j+4)``
#: (``0x43004300`` is 128 in both halves; the nibbles land in the low mantissa bits, exactly), and a shift or
#: an and turns each half into float32; then the same subtraction and FMA per code: the same products, added
#: to a lane in another order (j, j + 4, j + 1, ...). The compiler otherwise spends a shift, a bit-field extract
#: and an or per field. On the H200, W4A16 at one token (the MoE layer, cuda-moe.md v14): 102 vs 109 us.
PAIR_DECODE = True


@triton.jit
def _dp4a(a, b, c, ASM: tl.constexpr):
    """``c + sum_i a_i * b_i`` over the 4 signed bytes of int32 a and b (PTX ``dp4a.s32.s32``; plain shifts in the
    interpreter)."""
    if ASM:
        return tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c], dtype=tl.int32,
                                         is_pure=True, pack=1)
    for i in tl.static_range(4):
        c += ((a << (24 - 8 * i)) >> 24) * ((b << (24 - 8 * i)) >> 24)
    return c


@triton.jit
def _dp4a_tile(words, xw, offs_s, ASM: tl.constexpr):
    """int4 row tile ``[BLOCK_N, 16]`` times int8 x (W4A8_DYNAMIC): per lane s the exact integer ``sum over word s
    of q * x`` (int32), by two ``dp4a`` a word. The bytes of word s are ``lo = 16 q`` of fields 0, 2, 4, 6 and
    ``hi`` of fields 1, 3, 5, 7 (dsq_cuda.int4_int8_mma: one shift and two ``lop3``), and the int8 MMA order of
    x already holds the matching 4 activations in one int32 word: word ``8 (s % 4) + s // 4`` of the tile
    (``xw``) for lo, ``+ 4`` for hi; ``>> 4`` removes the factor 16 exactly."""
    lo, hi = int4_bytes(words)
    return _dp4a_pair(lo, hi, xw, 8 * (offs_s % 4) + offs_s // 4, ASM)


@triton.jit
def _dp4a_slices_tile(words, xw, offs_s, ASM: tl.constexpr):
    """The same tile times x as the digit slices of dsq_cuda.act_quant.int8_slices (32 words each, ``X = 65536 d0
    + 256 d1 + d2``): three exact sums combined in float32 as ``(256 S0 + S1) * 256 + S2`` (the first part in
    int32: |256 S0| < 2**21)."""
    lo, hi = int4_bytes(words)
    xi = 8 * (offs_s % 4) + offs_s // 4
    d0 = _dp4a_pair(lo, hi, xw, xi, ASM)
    d1 = _dp4a_pair(lo, hi, xw + 32, xi, ASM)
    d2 = _dp4a_pair(lo, hi, xw + 64, xi, ASM)
    return (d0 * 256 + d1).to(tl.float32) * 256.0 + d2.to(tl.float32)


@triton.jit
def _dp4a_pair(lo, hi, xw, xi, ASM: tl.constexpr):
    x_lo = tl.broadcast_to(tl.load(xw + xi)[None, :], lo.shape)
    x_hi = tl.broadcast_to(tl.load(xw + xi + 4)[None, :], lo.shape)
    return _dp4a(hi, x_hi, _dp4a(lo, x_lo, tl.zeros_like(lo), ASM), ASM) >> 4


@triton.jit
def gemv_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, ids_ptr, xs_ptr, wc_ptr, N, K, KW, NG, stride_xm,
                stride_om, stride_wn, stride_wt, stride_we, stride_se, stride_ce, e_lo, e_hi,
                G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr, SW: tl.constexpr,
                CH: tl.constexpr, MOE: tl.constexpr = False, X_DIV: tl.constexpr = 1,
                MANT: tl.constexpr = False, X_SCALE: tl.constexpr = 0, CHANNEL_SCALE: tl.constexpr = False,
                PAIRS: tl.constexpr = False, SIGNED: tl.constexpr = False, EVEN_W: tl.constexpr = False,
                SLW: tl.constexpr = 0, DP4A: tl.constexpr = 0, ASM: tl.constexpr = True, PDL: tl.constexpr = False,
                PREFETCH: tl.constexpr = 0, SLOTS: tl.constexpr = False, sum_ptr=None, count_ptr=None):
    """y[row, n] (see the module docstring): K is the length of an x row (masked past it), KW the words of a
    weight row that exist (tile t's words ``t*SW + [0, SW)`` past KW read as 0), EVEN_W when every chunk's words
    exist (no word mask). SLW > 0: row tiles, SLW words per row of a *layout* tile (compile-time strides), read
    as SLW / SW sub-tiles of SW words (row tiles wider than the kernel's loads, shared with the decode kernels):
    field j of sub-tile u of layout tile t multiplies x ``t*EPW*SLW + j*SLW + u*SW + [0, SW)``. SLW = 0: the
    canonical words, ``stride_wn`` words between rows and ``stride_wt`` between tiles. DP4A (1 or 3 slices):
    see :func:`_dp4a_tile` / :func:`_dp4a_slices_tile` (x: int32 words of int8 codes in slab.int8_mma_order, or
    of act_quant.int8_slices; K counts inputs). PDL / PREFETCH: dsq_cuda.pdl (PREFETCH: how many of the
    program's first row tiles go to L2 before the wait, row tiles of whole 4 KB pieces only)."""
    if PREFETCH == 0:
        wait_for_inputs(PDL)
    EPW: tl.constexpr = 32 // BITS
    LBK: tl.constexpr = EPW * SW  # inputs per (sub-)tile
    LW: tl.constexpr = SW if SLW == 0 else SLW  # words per row of a layout tile
    R: tl.constexpr = LW // SW  # sub-tiles per layout tile
    # CH: inputs per chunk (dsq_cuda.slab.gemv_chunk), a multiple of the tile and of the scale group
    TPC: tl.constexpr = CH // LBK  # tiles per chunk
    FPG: tl.constexpr = G // SW  # fields per scale group (G: the group, or LBK when scales are per channel)
    OFF: tl.constexpr = 1 << (BITS - 1)
    MASK: tl.constexpr = (1 << BITS) - 1
    ONE: tl.constexpr = 1 << BITS  # MANT: f = 1 + u / ONE
    TOP: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)  # the top BITS mantissa bits of a float32
    row = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, SW)
    nmask = rows < N
    chunks = tl.cdiv(K, CH)  # words past KW are masked, x past K is 0
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
        wc_ptr += e * stride_ce
        x_row = x_ptr + (row // X_DIV) * stride_xm
    if PREFETCH > 0:  # read before the wait: the host launches it so that the weights and expert ids were
        # written before the kernel this one follows (dsq_cuda.pdl)
        tl.static_assert(SLW > 0)
        prefetch_row_tiles(w_ptr, c_lo * (TPC // R), c_hi * (TPC // R), N, pid_n, BLOCK_N, LW, PREFETCH)
        wait_for_inputs(PDL)
    if SLW > 0:  # row tiles: compile-time strides (rows LW words apart, tiles N * LW)
        wbase = w_ptr + rows[:, None] * LW + offs_s[None, :]
    else:
        wbase = w_ptr + rows[:, None].to(tl.int64) * stride_wn + offs_s[None, :]
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    # scaled group sums per lane, reduced over the lanes once at the end: a lane reduction per group costs
    # cross-thread shuffles (the lanes of a row are spread over threads), a scaled FMA per lane does not
    lane_acc = tl.zeros([BLOCK_N, SW], dtype=tl.float32)
    part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)  # sum of x * (q - zp), or of x * f (MANT), per lane
    xacc = tl.zeros([SW], dtype=tl.float32)  # MANT: sum of x per lane over the same inputs
    lane_i = tl.zeros([BLOCK_N, SW], dtype=tl.int32)  # DP4A 1: integer sums per lane, group scales applied
    if DP4A:
        tl.static_assert(BITS == 4 and SW == 16 and LW == SW and (G % LBK == 0 or not GROUP_SCALE))
        tl.static_assert(DP4A == 1 or GROUP_SCALE)
    for c in range(c_lo, c_hi):
        for tt in tl.static_range(TPC):
            t = c * TPC + tt
            tl_ = c * (TPC // R) + tt // R  # the layout tile and the sub-tile in it (TPC is a multiple of R)
            u = tt % R  # (a compile-time value: tt is static)
            if SLW > 0:
                wt = wbase + tl_.to(tl.int64) * N * LW + u * SW
            else:
                wt = wbase + tl_.to(tl.int64) * stride_wt
            if EVEN_W:
                words = tl.load(wt, mask=nmask[:, None], other=0)
            else:
                words = tl.load(wt, mask=nmask[:, None] & (t * SW + offs_s < KW)[None, :], other=0)
            if SIGNED:  # two's complement bytes -> offset binary (u = q + 128): flip each byte's top bit
                words = words ^ -2139062144  # 0x80808080
            if DP4A == 1:
                d = _dp4a_tile(words, x_row + t * (LBK // 4), offs_s, ASM)
                if GROUP_SCALE:  # the integer s2 (two-level), held as float32 by the layout
                    g = tl.minimum((t * LBK) // G, NG - 1)
                    d = d * tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0.0).to(tl.int32)[:, None]
                lane_i += d
            elif DP4A == 3:  # x as 3 digit slices (4 slice slots of LBK bytes a tile), float group scales
                g = tl.minimum((t * LBK) // G, NG - 1)
                lane_acc += _dp4a_slices_tile(words, x_row + t * LBK, offs_s, ASM) * \
                    tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0.0)[:, None]
            for j in tl.static_range(0 if DP4A else EPW):
                k0 = tl_ * (EPW * LW) + j * LW + u * SW
                ks = k0 + offs_s
                if PAIRS:  # int4, fields j and j + 4 at once (see PAIR_DECODE); nothing left for j >= 4
                    if j < EPW // 2:
                        sub = 136.0  # 128 + 2**(BITS-1)
                        if ASYM:
                            g = tl.minimum(k0 // G, NG - 1)
                            zp = tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
                            sub = (sub + zp)[:, None]
                        ks_hi = ks + (EPW // 2) * LW
                        xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
                        xh = tl.load(x_row + ks_hi, mask=ks_hi < K, other=0.0).to(tl.float32)
                        r = ((words >> (j * BITS)) & 0x000F000F) | 0x43004300  # bf16 pair 128 + u_j, 128 + u_j+4
                        lo = (r << 16).to(tl.float32, bitcast=True) - sub
                        hi = (r & -65536).to(tl.float32, bitcast=True) - sub
                        part += xj[None, :] * lo  # two FMAs (one expression would round x * lo first)
                        part += xh[None, :] * hi
                elif MANT:
                    xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
                    # field j moved to the top mantissa bits of 1.0: f = 1 + u / 2**BITS exactly (a shift and
                    # an and-or); sum x * (q - zp) is rebuilt per group from sum x * f and sum x
                    SH = 23 - BITS - BITS * j
                    if SH >= 0:
                        f = ((words << SH) & TOP) | 0x3F800000
                    else:
                        f = ((words >> (-SH)) & TOP) | 0x3F800000
                    part += xj[None, :] * f.to(tl.float32, bitcast=True)
                    xacc += xj
                else:
                    xj = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
                    # (u | 0x4B000000) as float32 is 2**23 + u: one subtraction gives q - zp exactly
                    sub = 8388608.0 + OFF
                    if ASYM:
                        g = tl.minimum(k0 // G, NG - 1)  # padding past K reads the last group (x is 0 there)
                        zp = tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
                        sub = (sub + zp)[:, None]
                    q = (((words >> (j * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True) - sub
                    part += xj[None, :] * q
                if GROUP_SCALE:
                    if (tt * EPW + j + 1) % FPG == 0:  # the last field of a scale group
                        g = tl.minimum(k0 // G, NG - 1)  # padding past K reads the last group (x is 0 there)
                        s = tl.load(ws_ptr + rows * NG + g, mask=nmask, other=0.0)
                        if MANT:
                            sub = ONE + OFF
                            if ASYM:
                                sub = sub + tl.load(wz_ptr + rows * NG + g, mask=nmask, other=0).to(tl.float32)
                            # sum x * (q - zp) = 2**BITS * sum x * f - (2**BITS + 2**(BITS-1) + zp) * sum x
                            acc += (tl.sum(part, axis=1) * ONE - sub * tl.sum(xacc, axis=0)) * s
                            xacc = tl.zeros([SW], dtype=tl.float32)
                        else:
                            lane_acc += part * s[:, None]
                        part = tl.zeros([BLOCK_N, SW], dtype=tl.float32)
    if DP4A == 1:  # exact integer sums, as the reference's; float32 from here on
        y = tl.sum(lane_i.to(tl.int64), axis=1).to(tl.float32)
        if CHANNEL_SCALE:
            y = y * tl.load(wc_ptr + rows, mask=nmask, other=0.0)
        elif not GROUP_SCALE:
            y = y * tl.load(ws_ptr + rows, mask=nmask, other=0.0)
    elif GROUP_SCALE:
        y = acc + tl.sum(lane_acc, axis=1)  # (acc: the MANT groups)
        if CHANNEL_SCALE:  # two-level weights: the group scales were the integer s2, this is s1
            y = y * tl.load(wc_ptr + rows, mask=nmask, other=0.0)
    elif MANT:
        s = tl.load(ws_ptr + rows, mask=nmask, other=0.0)
        y = (tl.sum(part, axis=1) * ONE - (ONE + OFF) * tl.sum(xacc, axis=0)) * s
    else:
        s = tl.load(ws_ptr + rows, mask=nmask, other=0.0)
        y = tl.sum(part, axis=1) * s
    if X_SCALE == 1:  # x held activation codes (exact in float): their row's scale
        y = y * tl.load(xs_ptr + row // X_DIV)
    elif X_SCALE == 2:  # static codes: the scale of the pair's expert
        y = y * tl.load(xs_ptr + e)
    if HAS_BIAS:
        b = tl.load(bias_ptr + rows, mask=nmask, other=0.0).to(tl.float32)
        y = y + tl.where(pid_k == 0, 1.0, 0.0) * b
    optr = out_ptr + row * stride_om + rows
    if SLOTS:  # deterministic split-K: partial sum pid_k in slot pid_k of sum [SPLIT_K, rows, N]; the program
        # that completes (row, pid_n) adds the slots in slot order (the pattern of dsq_cuda.mma_decode_kernel's
        # FIXUP with SLOTS) and leaves its count at zero for the next call
        n_rows = tl.num_programs(0)
        tl.store(sum_ptr + (pid_k * n_rows + row).to(tl.int64) * N + rows, y, mask=nmask)
        tl.debug_barrier()
        cnt = count_ptr + row * tl.num_programs(1) + pid_n
        if tl.atomic_add(cnt, 1) == SPLIT_K - 1:
            total = tl.zeros([BLOCK_N], dtype=tl.float32)
            for j in tl.static_range(SPLIT_K):
                total += tl.load(sum_ptr + (j * n_rows + row).to(tl.int64) * N + rows, mask=nmask, other=0.0,
                                 cache_modifier=".cg")
            tl.store(optr, total.to(out_ptr.dtype.element_ty), mask=nmask)
            tl.atomic_xchg(cnt, 0)
    elif SPLIT_K > 1:
        tl.atomic_add(optr, y, mask=nmask, sem="relaxed")  # unordered: the kernel's end orders them
    else:
        tl.store(optr, y.to(out_ptr.dtype.element_ty), mask=nmask)


def launch(x, words, ws, wz, bias, out, scheme, rows: int, n: int, cfg, group: int, row_tiles: bool = True,
           moe: tuple | None = None, xs=None, wc=None, xs_per_expert: bool = False, signed: bool = False,
           dp4a: int = 0, pdl: bool = False, prefetch: int = 0, slots: bool = False) -> None:
    """Launch :func:`gemv_kernel` over ``rows`` program rows with config ``cfg`` (dsq_cuda.configs).

    ``row_tiles``: ``words`` are row tiles ``[..., tiles, N, SW]`` (SW = -cfg.block_k) and x rows are in input
    order; otherwise canonical words ``[..., N, KW]`` (``signed``: int8 codes one per byte, viewed as words)
    and x rows in the tile order of :func:`dsq_cuda.slab.tile_order` for ``SW = gemv_tile_words(bits, group,
    -cfg.block_k)``. ``wz``/``bias`` may be None. ``moe``: ``(ids, stride_we, stride_se, e_lo, e_hi, x_div)``
    for the MoE mode, where program row p is pair p (see the module docstring). ``xs``: float32 activation
    scales per x row when x holds codes (per expert with ``xs_per_expert``, MoE mode); ``wc``: two-level s1
    ``[E, N, 1]`` (MoE mode). ``dp4a``: x holds int8 codes in dsq_cuda.slab.int8_mma_order (1), or the digit
    slices of dsq_cuda.act_quant.int8_slices (3), for int4 row tiles of 16 words, multiplied by ``dp4a`` in int32
    (:func:`_dp4a_tile`, :func:`_dp4a_slices_tile`). ``pdl``: launch with programmatic dependent launch and wait
    for the previous kernel in the kernel (dsq_cuda.pdl), after an L2 prefetch of ``prefetch`` row tiles.
    ``slots`` (split-K only): the partial sums meet in a slot each, added in slot order by the program that
    completes an output block, so every call gives the same bits (torch.use_deterministic_algorithms); ``out``
    is then written, not accumulated into, and need not be zeroed."""
    import torch

    from dsq.schemes import Granularity
    from dsq_cuda._env import interpreting
    from dsq_cuda.pdl import launch_kwargs
    from dsq_cuda.slab import gemv_chunk, gemv_tile_words

    bits = scheme.weight_bits
    epw = 32 // bits
    if dp4a:  # the kernel reads x as int32 words, 4 codes each
        x = x.view(torch.int32)
    kx = x.shape[-1] * (4 if dp4a == 1 else 1)  # (slices: 4 slice slots of a byte per input)
    if row_tiles:  # (the kernel takes their strides from SLW)
        slw, sw = words.shape[-1], -cfg.block_k
        if slw % sw or (group and group % (epw * slw)):  # sub-tiles need whole layout tiles per scale group
            sw = slw
        kw, stride_wn, stride_wt = words.shape[-3] * slw, slw, n * slw
    else:
        sw = gemv_tile_words(bits, group, -cfg.block_k)
        slw = 0
        kw, stride_wn, stride_wt = words.shape[-1], words.stride(-2), sw
        if kx != -(-kw // sw) * sw * epw:
            raise RuntimeError(f"gemv: x rows of {kx} are not the tile order of {kw} words at {sw} words a tile")
    chunk = gemv_chunk(bits, group, slw or sw)
    ids, stride_we, stride_se, e_lo, e_hi, x_div = moe if moe is not None else (ws, 0, 0, 0, 1, 1)
    grid = (rows, -(-n // cfg.block_n), cfg.split_k)
    slots = slots and cfg.split_k > 1
    sums = counts = None
    if slots:
        from dsq_cuda.fixup import fixup_workspace

        sums, counts = fixup_workspace(out.device, rows, n, cfg.split_k, counts=grid[0] * grid[1])
    gemv_kernel[grid](x, words, ws, ws if wz is None else wz, ws if bias is None else bias, out, ids,
                      ws if xs is None else xs, ws if wc is None else wc, n, kx, kw, ws.shape[-1], x.stride(0),
                      out.stride(0), stride_wn, stride_wt, stride_we, stride_se, 0 if wc is None else wc[0].numel(),
                      e_lo, e_hi,
                      G=group or epw * sw, BITS=bits, ASYM=wz is not None,
                      GROUP_SCALE=scheme.weight_granularity is Granularity.GROUP or scheme.two_level,
                      HAS_BIAS=bias is not None,
                      SPLIT_K=cfg.split_k, BLOCK_N=cfg.block_n, SW=sw, CH=chunk,
                      MOE=moe is not None, X_DIV=x_div, MANT=MANT_DECODE,
                      X_SCALE=0 if xs is None else 2 if xs_per_expert else 1, CHANNEL_SCALE=wc is not None,
                      PAIRS=pairs_apply(bits, group, slw or sw), SIGNED=signed,
                      EVEN_W=kw * epw >= -(-kx // chunk) * chunk, SLW=slw,  # EVEN_W: every chunk's words exist
                      DP4A=dp4a, ASM=not interpreting(), PDL=pdl, PREFETCH=prefetch if pdl and slw else 0,
                      SLOTS=slots, sum_ptr=sums, count_ptr=counts,
                      num_warps=cfg.num_warps, num_stages=cfg.num_stages, **launch_kwargs(pdl))


def pairs_apply(bits: int, group: int, sw: int) -> bool:
    """Whether the GEMV decodes int4 fields in pairs (PAIR_DECODE): the fields of a word must share a scale
    group (the group a multiple of the 8 * SW inputs of a tile, or per-channel scales), and MANT off."""
    return PAIR_DECODE and not MANT_DECODE and bits == 4 and (not group or group % (8 * sw) == 0)
