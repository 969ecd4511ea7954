"""Tile loaders of the fused-MoE grouped GEMMs (Triton device functions; moe_kernels.py uses them).

A K-step of the grouped GEMM multiplies an activation tile ``A [BM, BK]`` by a weight tile ``W [BK, BN]``
(the weight is stored ``[E, N, K]``, so the tile is read transposed). Each loader returns the operand in the
type the tensor cores take for the scheme, plus the per-tile scales:

Weights (``W_KIND``): 0 float (bf16 baseline), 1 int4 eight per int32 word, 2 int8 four per int32 word
(W8A16), 3 int8, 4 float8 e4m3. Packed codes are ``((word >> 4*(k%8)) & 15) - 8`` (int4) or
``((word >> 8*(k%4)) & 255) - 128`` (int8). Zero points (asymmetric int4) are subtracted and two-level group
scales multiplied in integer registers, so ``q`` stays exact: ``(q - zp)`` lies in [-15, 15], ``q4*s2`` in
[-119, 119]. The dot operand is ``q`` cast to the activation's dot type, which is exact for all of these.

Activations (``A_KIND``): 0 float (x.dtype, the weight-only dot), 1 codes already quantized per token or per
token-group (int8/fp8 from act_quant.py), 2 float quantized on load with a dynamic scale
``s = max(amax / D, tiny)`` from a precomputed amax (D = 127 int8, 448 fp8), 3 float quantized on load with a
static per-expert scale and zero point: ``q = clip(round(x / s + zp), -128, 127)``.
Codes follow dsq.schemes exactly (dsq_cuda.numerics: correctly rounded division, ties-to-even rounding,
e4m3 nearest).
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda.numerics import clamp, fp8_code, int_code, rne, round_half_away


@triton.jit
def round_to(v, OUT_KIND: tl.constexpr):
    """float32 ``v`` rounded to the output dtype and widened back: 0 float32, 1 bfloat16, 2 float16.

    bf16 rounding is done on the bits (nearest, ties to even), because Triton's interpreter truncates.
    """
    if OUT_KIND == 1:
        bits = v.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        return bits.to(tl.float32, bitcast=True)
    elif OUT_KIND == 2:
        return v.to(tl.float16).to(tl.float32)
    else:
        return v


@triton.jit
def swiglu_values(h_row, cols, mask, I, OUT_KIND: tl.constexpr):
    """``round(silu(round(h[cols])) * round(h[I + cols]))`` of one float32 row ``h_row`` [2I] (gate, then up),
    widened to float32, each rounding to the output dtype (OUT_KIND as in round_to), silu(g) = g / (1 + exp(-g))
    in float32. moe_decode_kernels.swiglu_kernel stores it; act_quant's SWIGLU mode quantizes it without the
    round trip (both call this, so they compute the same bits)."""
    g = round_to(tl.load(h_row + cols, mask=mask, other=0.0), OUT_KIND)
    u = round_to(tl.load(h_row + I + cols, mask=mask, other=0.0), OUT_KIND)
    return round_to(g / (1.0 + tl.exp(-g)) * u, OUT_KIND)


@triton.jit
def load_w(w_ptr, zp_ptr, gs_ptr, e64, rows, offs_k, k0, N_ROWS, K,
           stride_we, stride_wn, stride_ze, stride_zn, stride_ge, stride_gn,
           W_KIND: tl.constexpr, W_ZP: tl.constexpr, W_GS: tl.constexpr, GROUP: tl.constexpr,
           DOT: tl.constexpr, EVEN_K: tl.constexpr, UNIQUE_LOAD: tl.constexpr,
           BK: tl.constexpr, BN: tl.constexpr):
    """Weight tile ``[BK, BN]`` of expert e: rows ``rows`` (output features), inputs ``k0 + offs_k``.

    Returns the dot operand in the DOT type (0 = a's float dtype given by w_ptr for W_KIND 0, 1 = int8,
    2 = fp8 e4m3, 3 = bfloat16, 4 = float16, 5 = float32). Also returns the integer column sums of q
    (needed for an activation zero point), which callers that do not need them ignore.
    """
    ks = k0 + offs_k
    kmask = ks < K
    nmask = rows < N_ROWS
    mask = kmask[:, None] & nmask[None, :]
    base = w_ptr + e64 * stride_we + rows[None, :].to(tl.int64) * stride_wn
    if W_KIND == 1 and UNIQUE_LOAD:
        # Each word loaded once: [BK/8, BN] words -> [BK/8, 8, BN] nibbles -> [BK, BN] (k = word*8 + i).
        kw = k0 // 8 + tl.arange(0, BK // 8)
        wmask = (kw < (K + 7) // 8)[:, None] & nmask[None, :]
        word = tl.load(base + kw[:, None], mask=wmask, other=0)
        fields = (word[:, None, :] >> (tl.arange(0, 8) * 4)[None, :, None]) & 15
        q = tl.reshape(fields, [BK, BN]) - 8
    elif W_KIND == 2 and UNIQUE_LOAD:
        kw = k0 // 4 + tl.arange(0, BK // 4)
        wmask = (kw < (K + 3) // 4)[:, None] & nmask[None, :]
        word = tl.load(base + kw[:, None], mask=wmask, other=0)
        fields = (word[:, None, :] >> (tl.arange(0, 4) * 8)[None, :, None]) & 255
        q = tl.reshape(fields, [BK, BN]) - 128
    elif W_KIND == 1:
        word = tl.load(base + (ks // 8)[:, None], mask=mask, other=0)
        q = ((word >> ((ks % 8) * 4)[:, None]) & 15) - 8
    elif W_KIND == 2:
        word = tl.load(base + (ks // 4)[:, None], mask=mask, other=0)
        q = ((word >> ((ks % 4) * 8)[:, None]) & 255) - 128
    elif W_KIND == 4:  # fp8 arrives as its uint8 bit patterns (a masked fp8 load has no 'other' value)
        q = tl.load(base + ks[:, None], mask=mask, other=0).to(tl.float8e4nv, bitcast=True)
    else:
        q = tl.load(base + ks[:, None], mask=mask, other=0)
    if W_KIND == 1 or W_KIND == 2:
        g = k0 // GROUP
        if W_ZP:
            zword = tl.load(zp_ptr + e64 * stride_ze + (rows // 8).to(tl.int64) * stride_zn + g,
                            mask=nmask, other=0)
            zp = ((zword >> ((rows % 8) * 4)) & 15) - 8
            q = q - zp[None, :]
        if W_GS:
            s2 = tl.load(gs_ptr + e64 * stride_ge + rows.to(tl.int64) * stride_gn + g, mask=nmask, other=0)
            q = q * s2.to(tl.int32)[None, :]
        if not EVEN_K:
            q = tl.where(mask, q, 0)
    if DOT == 1:
        w = q.to(tl.int8)
    elif DOT == 2:
        if W_KIND == 4:
            w = q
        else:
            w = q.to(tl.float32).to(tl.float8e4nv)
    elif DOT == 3:
        w = q.to(tl.bfloat16)
    elif DOT == 4:
        w = q.to(tl.float16)
    elif DOT == 5:
        w = q.to(tl.float32)
    else:
        w = q
    return w


@triton.jit
def w_tile_scale(ws_ptr, e64, rows, k0, N_ROWS, stride_se, stride_sn,
                 W_SCALE: tl.constexpr, GROUP: tl.constexpr, BLOCK_N_W: tl.constexpr, BLOCK_K_W: tl.constexpr):
    """Per-column float32 weight scale of one K-tile: W_SCALE 2 = group ``[N, K/G]``, 3 = block."""
    nmask = rows < N_ROWS
    if W_SCALE == 2:
        s = tl.load(ws_ptr + e64 * stride_se + rows.to(tl.int64) * stride_sn + k0 // GROUP, mask=nmask, other=0)
    else:
        s = tl.load(ws_ptr + e64 * stride_se + (rows // BLOCK_N_W).to(tl.int64) * stride_sn + k0 // BLOCK_K_W,
                    mask=nmask, other=0)
    return s.to(tl.float32)


@triton.jit
def load_a(a_ptr, rows, rmask, offs_k, k0, K, stride_am, as_ptr, stride_asm, st_s, st_zp,
           A_KIND: tl.constexpr, A_FP8: tl.constexpr, A_GROUPED: tl.constexpr, A_GROUP: tl.constexpr,
           HALF_AWAY: tl.constexpr, DOT: tl.constexpr, EVEN_K: tl.constexpr, tiny):
    """Activation tile ``[BM, BK]`` for rows ``rows`` and the per-row scale that goes with this K-tile.

    The returned scale is only meaningful for grouped activation scales (A_GROUPED) inside the loop; row
    scales of per-token schemes are applied in the epilogue (see ``row_scale``).
    """
    ks = k0 + offs_k
    if EVEN_K:
        mask = rmask[:, None]
    else:
        mask = rmask[:, None] & (ks < K)[None, :]
    a = tl.load(a_ptr + rows[:, None].to(tl.int64) * stride_am + ks[None, :], mask=mask, other=0)
    if A_KIND == 1 and A_FP8:
        a = a.to(tl.float8e4nv, bitcast=True)
    elif A_KIND == 0:
        if DOT == 5:
            a = a.to(tl.float32)
    elif A_KIND == 2:
        col = tl.minimum(k0, K - 1) // A_GROUP if A_GROUPED else 0  # clamped: a tile may run past K
        amax = tl.load(as_ptr + rows.to(tl.int64) * stride_asm + col, mask=rmask, other=0.0)
        if A_FP8:
            s = tl.maximum(tl.math.div_rn(amax, 448.0), tiny)
            a = fp8_code(a.to(tl.float32), s[:, None]).to(tl.float8e4nv)
        else:
            s = tl.maximum(tl.math.div_rn(amax, 127.0), tiny)
            a = int_code(a.to(tl.float32), s[:, None], -128.0, 127.0).to(tl.int8)
    elif A_KIND == 3:
        v = clamp(tl.math.div_rn(a.to(tl.float32), st_s) + st_zp, -128.0, 127.0)
        if HALF_AWAY:
            a = round_half_away(v).to(tl.int8)
        else:
            a = rne(v).to(tl.int8)
    return a


@triton.jit
def a_group_scale(as_ptr, rows, rmask, k0, stride_asm, A_KIND: tl.constexpr, A_FP8: tl.constexpr,
                  A_GROUP: tl.constexpr, tiny):
    """Row scales ``[BM]`` of the activation group that holds this K-tile (token-group schemes)."""
    v = tl.load(as_ptr + rows.to(tl.int64) * stride_asm + k0 // A_GROUP, mask=rmask, other=0.0)
    if A_KIND == 2:  # stored as amax: turn it into the scale
        if A_FP8:
            v = tl.maximum(tl.math.div_rn(v, 448.0), tiny)
        else:
            v = tl.maximum(tl.math.div_rn(v, 127.0), tiny)
    return v


@triton.jit
def row_scale(as_ptr, rows, rmask, stride_asm, A_KIND: tl.constexpr, A_FP8: tl.constexpr, tiny):
    """Per-token row scales ``[BM]`` (A_KIND 1: stored scales; 2: from the stored amax)."""
    v = tl.load(as_ptr + rows.to(tl.int64) * stride_asm, mask=rmask, other=0.0)
    if A_KIND == 2:
        if A_FP8:
            v = tl.maximum(tl.math.div_rn(v, 448.0), tiny)
        else:
            v = tl.maximum(tl.math.div_rn(v, 127.0), tiny)
    return v


@triton.jit
def w_channel_scale(ws_ptr, e64, rows, N_ROWS, stride_se, stride_sn):
    """Per-output-channel float32 weight scale ``[BN]`` (channel schemes and two-level level-1 scales)."""
    s = tl.load(ws_ptr + e64 * stride_se + rows.to(tl.int64) * stride_sn, mask=rows < N_ROWS, other=0)
    return s.to(tl.float32)


@triton.jit
def int4_halves(b, ASM: tl.constexpr):
    """Bytes of canonical int4 words (uint8, two fields each) -> (low field - 8, high field - 8) as int8.

    Byte ``j`` of a weight row holds the codes of inputs ``2j`` (bits 0-3) and ``2j + 1`` (bits 4-7), offset
    binary. ``ASM`` decodes four bytes per 32-bit register with inline PTX (7 instructions for 8 codes, no
    per-element conversions): per byte, ``((f | 0x80) - 8) ^ 0x80`` is ``f - 8`` as a two's-complement byte,
    and setting bit 7 first means no byte borrows from its neighbour. The interpreter takes the plain path.
    """
    if ASM:
        lo, hi = tl.inline_asm_elementwise(
            asm="""
            {
            .reg .b32 t;
            lop3.b32 t, $2, 0x0F0F0F0F, 0x80808080, 0xEA;
            sub.u32 t, t, 0x08080808;
            xor.b32 $0, t, 0x80808080;
            shr.u32 t, $2, 4;
            lop3.b32 t, t, 0x0F0F0F0F, 0x80808080, 0xEA;
            sub.u32 t, t, 0x08080808;
            xor.b32 $1, t, 0x80808080;
            }
            """,
            constraints="=r,=r,r", args=[b], dtype=(tl.int8, tl.int8), is_pure=True, pack=4)
    else:
        lo = (b & 15).to(tl.int8) - 8
        hi = (b >> 4).to(tl.int8) - 8
    return lo, hi


@triton.jit
def int4_split_step(acc, a_lo, a_hi, wb_ptr, gs_ptr, e64, rows, k0, N_ROWS, KB, stride_we, stride_wn, stride_ge,
                    stride_gn, GROUP: tl.constexpr, ASM: tl.constexpr, SWAP: tl.constexpr, BK: tl.constexpr,
                    BN: tl.constexpr, DOT: tl.constexpr = 1, RT: tl.constexpr = 0):
    """One K step of activations times int4 weights with a scale per group along K, added to ``acc [BM, BN]``:

        acc + (a_lo @ q_even + a_hi @ q_odd) * s[n, k0 // GROUP]

    DOT 1 (W4A8 two-level): int8 codes, int32 sums, ``s`` the integer group scale s2 (``gs_ptr``). DOT 3 / 4 / 5
    (W4A16): bf16 / fp16 / float32 activations, the codes converted exactly to that type, float32 sums, ``s`` the
    float group scale (``gs_ptr`` is then weight_scale; DOT 5 multiplies in IEEE float32, the interpreter's way).
    DOT 2 (W4AFP8): e4m3 activation codes as uint8 bits, the weight codes as e4m3 (exact), float32 sums.

    ``a_lo`` / ``a_hi`` ``[BM, BK/2]`` are the activations of inputs ``k0 + 2j`` / ``k0 + 2j + 1``
    (moe_requant.split_halves lays them out so). ``wb_ptr`` is the canonical int4 words viewed as bytes (``KB``
    bytes per row): byte j holds inputs 2j (bits 0-3) and 2j + 1, so one byte load serves both dots. Bytes past
    the row read as code -8, which the zero activations there cancel; filling them with code 0 (0x88) made the
    layer 30% slower on the H200, likely because a load that fills with zeros can stay an asynchronous copy.
    The group scale multiplies the partial sum rather than every code: the same number for int32 sums, as the
    step stays inside one group.

    ``SWAP``: the transposed product, ``acc [BN, BM]`` from ``a_lo`` / ``a_hi`` given as ``[BK/2, BM]``, so that
    the decoded weights are the MMA's first operand (which may stay in registers) instead of its second.

    ``RT`` > 0: the bytes are the experts' row tiles (dsq_cuda.slab.to_row_tiles, RT bytes a row a tile of
    ``2 RT`` inputs, tiles ``stride_wn`` bytes apart, BK dividing a tile) instead of the canonical words: byte c of
    a tile then holds other inputs in its two fields (slab.row_tile_byte_order), which the activations'
    order follows, so the products and sums are the same.

    Why s2 scales the partial sum and not the codes: multiplying the codes four bytes per PTX sequence needs the
    four bytes of a register to share one s2 (one output row), and Triton's register layout did not guarantee
    that. On the H200 it gave wrong layers in the untransposed tile, and in the transposed one at 128-row blocks
    (cuda-moe.md v13); multiplying per element in Triton costs more than scaling the int32 partial sum.
    """
    kb = k0 // 2 + tl.arange(0, BK // 2)
    nmask = rows < N_ROWS
    s = tl.load(gs_ptr + e64 * stride_ge + rows.to(tl.int64) * stride_gn + k0 // GROUP, mask=nmask, other=0)
    if DOT == 1:
        s = s.to(tl.int32)
    else:
        s = s.to(tl.float32)
    base = wb_ptr + e64 * stride_we
    if RT > 0:  # row tiles: the tile of input k0, then this step's bytes of each row (padded: no K mask)
        base += (k0 // (2 * RT)) * stride_wn  # int32: < 2**31 bytes an expert
        # the step's first byte in the tile, a multiple of BK / 2: said so, or Triton cannot prove the
        # alignment and loads byte by byte
        cb = tl.multiple_of((k0 % (2 * RT)) // 2, BK // 2) + tl.arange(0, BK // 2)
        if SWAP:
            b = tl.load(base + rows[:, None].to(tl.int64) * RT + cb[None, :], mask=nmask[:, None], other=0)
        else:
            b = tl.load(base + rows[None, :].to(tl.int64) * RT + cb[:, None], mask=nmask[None, :], other=0)
    elif SWAP:
        b = tl.load(base + rows[:, None].to(tl.int64) * stride_wn + kb[None, :],
                    mask=nmask[:, None] & (kb < KB)[None, :], other=0)
    else:
        b = tl.load(base + rows[None, :].to(tl.int64) * stride_wn + kb[:, None],
                    mask=(kb < KB)[:, None] & nmask[None, :], other=0)
    w_lo, w_hi = int4_halves(b, ASM)
    if DOT == 1:
        if SWAP:
            part = tl.dot(w_hi, a_hi, tl.dot(w_lo, a_lo, out_dtype=tl.int32), out_dtype=tl.int32)
        else:
            part = tl.dot(a_hi, w_hi, tl.dot(a_lo, w_lo, out_dtype=tl.int32), out_dtype=tl.int32)
    else:
        if DOT == 2:  # e4m3 activation codes (uint8 bits); codes -8..7 are e4m3 values exactly
            w_lo, w_hi = w_lo.to(tl.float16).to(tl.float8e4nv), w_hi.to(tl.float16).to(tl.float8e4nv)
            a_lo, a_hi = a_lo.to(tl.float8e4nv, bitcast=True), a_hi.to(tl.float8e4nv, bitcast=True)
        elif DOT == 3:
            w_lo, w_hi = w_lo.to(tl.bfloat16), w_hi.to(tl.bfloat16)
        elif DOT == 4:
            w_lo, w_hi = w_lo.to(tl.float16), w_hi.to(tl.float16)
        else:
            w_lo, w_hi = w_lo.to(tl.float32), w_hi.to(tl.float32)
            a_lo, a_hi = a_lo.to(tl.float32), a_hi.to(tl.float32)
        if SWAP:
            if DOT == 5:
                part = tl.dot(w_hi, a_hi, tl.dot(w_lo, a_lo, input_precision="ieee"), input_precision="ieee")
            else:
                part = tl.dot(w_hi, a_hi, tl.dot(w_lo, a_lo))
        else:
            if DOT == 5:
                part = tl.dot(a_hi, w_hi, tl.dot(a_lo, w_lo, input_precision="ieee"), input_precision="ieee")
            else:
                part = tl.dot(a_hi, w_hi, tl.dot(a_lo, w_lo))
    if SWAP:  # (both returns in branches: Triton compiles the code after a constexpr-if return as well)
        out = acc + part * s[:, None]
    else:
        out = acc + part * s[None, :]
    return out


@triton.jit
def int8_bytes_step(acc, a_t, wb_ptr, e64, rows, k0, N_ROWS, KB, stride_we, stride_wn, DOT: tl.constexpr,
                    BK: tl.constexpr, RT: tl.constexpr = 0):
    """One K step of the transposed product ``acc [BN, BM] + W_tile @ a_t`` for int8 codes in words (W8A16).

    The packed words, viewed as bytes (``KB`` bytes per row), hold input k in byte k, offset binary: ``q = u - 128``,
    here ``(u ^ 0x80)`` read as a signed byte, converted exactly to the activations' type (DOT 3 bf16, 4 fp16, 5
    float32 in IEEE, the interpreter's way). ``a_t`` ``[BK, BM]`` are the activations of inputs ``k0 ..``; bytes
    past the row read as 0 (code -128), which the zero activations there cancel. Per-channel scales apply in the
    epilogue, so the float32 sum runs over the whole K without a per-step scale. ``RT`` > 0: the experts' row
    tiles (RT bytes a row a tile of RT inputs, tiles ``stride_wn`` bytes apart; activations in
    slab.row_tile_byte_order), as in int4_split_step.
    """
    kb = k0 + tl.arange(0, BK)
    nmask = rows < N_ROWS
    if RT > 0:
        base = wb_ptr + e64 * stride_we + (k0 // RT) * stride_wn
        cb = tl.multiple_of(k0 % RT, BK) + tl.arange(0, BK)  # (alignment said, as in int4_split_step)
        b = tl.load(base + rows[:, None].to(tl.int64) * RT + cb[None, :], mask=nmask[:, None], other=0)
    else:
        b = tl.load(wb_ptr + e64 * stride_we + rows[:, None].to(tl.int64) * stride_wn + kb[None, :],
                    mask=nmask[:, None] & (kb < KB)[None, :], other=0)
    q = (b ^ 0x80).to(tl.int8, bitcast=True)
    if DOT == 3:
        w = q.to(tl.bfloat16)
    elif DOT == 4:
        w = q.to(tl.float16)
    else:
        w = q.to(tl.float32)
    if DOT == 5:
        out = tl.dot(w, a_t.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(w, a_t, acc)
    return out


__all__ = ["round_to", "load_w", "int4_halves", "int4_split_step", "int8_bytes_step", "w_tile_scale", "load_a", "a_group_scale",
           "row_scale", "w_channel_scale", "triton"]
