"""int4 weights times int8 activations on the int8 tensor cores: the decode of int4 row tiles into MMA operands.

W4A8_DYNAMIC multiplies int4 codes q in [-8, 7] by the int8 codes of a per-token quantized x. The bf16 path of
dsq_cuda.mma_decode_kernel turns every two codes into a bf16 pair (a shift, a ``lop3`` and a packed
subtraction) and runs a bf16 MMA of depth 16. Here three integer instructions turn a word's eight codes into
two registers of four int8 operands each, and an int8 MMA of depth 32 takes them:

    byte i of a row-tile word w holds field 2i in its low nibble and field 2i + 1 in its high nibble, each the
    offset-binary code u = q + 8. ``u ^ 8`` is q's 4-bit two's complement, so with that nibble moved to the top
    of its byte the byte read as int8 is exactly ``16 q``:

        lo(w) = ((w << 4) & 0xF0F0F0F0) ^ 0x80808080      byte i = 16 q[field 2i]
        hi(w) = ( w       & 0xF0F0F0F0) ^ 0x80808080      byte i = 16 q[field 2i + 1]

    (one ``lop3`` each, plus the shift). ``16 |q| <= 128`` fits int8, and an MMA sums ``16 q x`` in int32:
    exact, and a multiple of 16, so ``>> 4`` recovers ``sum q x`` exactly (|sum| <= 8 * 128 * 128 per tile).

Operand order. Hopper's int8 wgmma takes operand A from registers as 4 consecutive K bytes per register: of
each 32-deep step, lane ``l`` of a quad holds K chunks ``j = l % 4`` (bytes 4j..4j+3) and ``j + 4`` (bytes
16 + 4j..). A row's tile of SW = 16 words (128 inputs, one 16-byte load per thread per row at 4 words a thread)
is read as word ``s = 4j + b``: its ``lo`` register is chunk j and its ``hi`` register chunk j + 4 of step b.
So the MMA's K position ``k' = 32 b + 16 h + 4 j + i`` (h = 0 for lo, 1 for hi) holds field ``2i + h`` of word
``s = 4j + b``, i.e. input ``(2i + h) * 16 + s`` of the tile (row tiles: field f of word s is input
``f * SW + s``). The activations are put in that order once per call (:func:`dsq_cuda.slab.int8_mma_order`,
or the quantization kernel's store: act_quant.quantize_per_token_int8 ``mma_order``), and the decode moves no
byte: the sm_90 SASS of the main loop has no byte permute for it and no shared-memory round trip
(tests/cuda/test_cuda_int8_mma_sass.py).

The same bytes serve the one-token GEMV's ``dp4a`` path (dsq_cuda.gemv_kernel DP4A): in this order the 4
activations of a word's ``lo`` (or ``hi``) bytes are one int32 word of x. Activations that are not int8 (bf16,
e4m3 codes) can enter either path as int8 digit slices (dsq_cuda.act_quant.int8_slices; SLICES = 4 below).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: the one row-tile width this path reads: 16 words (128 inputs) a tile, 4 words a thread
SW = 16
#: inputs per tile
LBK = 8 * SW
_SW = tl.constexpr(SW)  # (the same, readable inside kernels)
_LBK = tl.constexpr(LBK)


def mma_position_source(p):
    """The input (within a tile of LBK) whose activation goes to MMA K position ``p`` (int or integer tensor)."""
    b, h, j, i = p // 32, (p // 16) % 2, (p // 4) % 4, p % 4
    return (2 * i + h) * SW + 4 * j + b


@triton.jit
def mma_position(cols):
    """Where input ``cols`` goes in slab.int8_mma_order (the inverse of :func:`mma_position_source`): input
    ``r = 16 f + s`` of its tile goes to ``32 (s % 4) + 16 (f % 2) + 4 (s // 4) + f // 2``."""
    r = cols % _LBK
    f, s = r // _SW, r % _SW
    return cols - r + 32 * (s % 4) + 16 * (f % 2) + 4 * (s // 4) + f // 2


@triton.jit
def int4_bytes(words):
    """``(lo, hi)``: the ``16 q`` bytes of every word as int32 words (see above), with plain integer ops (the
    one-token GEMV's dp4a operands, dsq_cuda.gemv_kernel)."""
    lo = ((words << 4) & -252645136) ^ -2139062144  # & 0xF0F0F0F0, ^ 0x80808080
    return lo, (words & -252645136) ^ -2139062144


@triton.jit
def _codes_asm(words, BLOCK_N: tl.constexpr):
    """lo / hi bytes of every word as int8 ``[BLOCK_N, SW, 4]`` (inline PTX, 4 bytes to a register)."""
    # the word repeated to 4 elements, so the 4 int8 outputs of one asm instance (one register) are its 4 bytes
    w4 = tl.reshape(tl.join(tl.join(words, words), tl.join(words, words)), [BLOCK_N, _SW, 4])
    # lop3 0x6A: (a & b) ^ c
    lo = tl.inline_asm_elementwise("{ .reg .b32 t; shl.b32 t, $1, 4; lop3.b32 $0, t, 0xF0F0F0F0, 0x80808080, 0x6A; }",
                                   "=r,r,r,r,r", [w4], dtype=tl.int8, is_pure=True, pack=4)
    hi = tl.inline_asm_elementwise("lop3.b32 $0, $1, 0xF0F0F0F0, 0x80808080, 0x6A;",
                                   "=r,r,r,r,r", [w4], dtype=tl.int8, is_pure=True, pack=4)
    return lo, hi


@triton.jit
def _byte(words, F: tl.constexpr):
    """``16 q`` of field F of every word, as int8 (plain Triton ops: the interpreter's path)."""
    return ((((words >> (4 * F)) & 15) - 8) * 16).to(tl.int8)


@triton.jit
def _codes_ref(words, BLOCK_N: tl.constexpr):
    """The values of :func:`_codes_asm` with plain Triton ops."""
    # join stacks along a new last axis: [.., p, r] = X_{2r + p} for join(join(X0, X1), join(X2, X3)), hence the
    # permute before the reshape that makes the byte index 2r + p
    lo = tl.join(tl.join(_byte(words, 0), _byte(words, 2)), tl.join(_byte(words, 4), _byte(words, 6)))
    hi = tl.join(tl.join(_byte(words, 1), _byte(words, 3)), tl.join(_byte(words, 5), _byte(words, 7)))
    lo = tl.reshape(tl.permute(lo, (0, 1, 3, 2)), [BLOCK_N, _SW, 4])
    hi = tl.reshape(tl.permute(hi, (0, 1, 3, 2)), [BLOCK_N, _SW, 4])
    return lo, hi


@triton.jit
def int4_tile_as_int8(words, BLOCK_N: tl.constexpr, ASM: tl.constexpr):
    """A ``[BLOCK_N, SW]`` row-tile word tile -> int8 ``[BLOCK_N, LBK]``: ``16 q`` in MMA K order (see above)."""
    if ASM:
        lo, hi = _codes_asm(words, BLOCK_N)
    else:
        lo, hi = _codes_ref(words, BLOCK_N)
    lo = tl.reshape(lo, [BLOCK_N, 4, 4, 4])  # [n, j, b, i]: word s = 4j + b, byte i
    hi = tl.reshape(hi, [BLOCK_N, 4, 4, 4])
    a = tl.permute(tl.join(lo, hi), (0, 2, 4, 1, 3))  # [n, b, h, j, i]
    return tl.reshape(a, [BLOCK_N, _LBK])


@triton.jit
def int8_mma_tiles(wbase, w_step, xrows, t_lo, t_hi, rows, nmask, mmask, ws_ptr, NG, G: tl.constexpr,
                   GROUP_SCALE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, ASM: tl.constexpr,
                   SLICES: tl.constexpr):
    """The float32 sums ``[BLOCK_N, BLOCK_M]`` of row tiles ``[t_lo, t_hi)`` (word tile t at ``wbase + t * w_step``)
    times x, group scales applied (the channel and token scales are the caller's epilogue):

    SLICES = 1  x row m (``xrows[m]``) holds int8 codes in MMA order, tile t at ``t * LBK``. Per tile
                ``p = (16 q) @ x^T >> 4`` in int32 and ``acc += p * s2[n, g]`` in int32 (W4A8's integer s2),
                the reference's integer sums exactly; float32 at the end.
    SLICES = 4  x row m holds, per tile, 4 slices of LBK int8 digits ``[d0, d1, d2, 0]`` of the integers
                ``X = 65536 d0 + 256 d1 + d2`` (dsq_cuda.act_quant.int8_slices). The slices are the MMA's
                columns side by side (one ``[BLOCK_N, 4 BLOCK_M]`` MMA chain a tile), each int32 sum
                ``p_j = sum 16 q d_j`` exact, combined as ``(256 p0 + p1) * 16 + p2 / 16`` (the first in
                int32, exact) and times the float group scale.
    Columns past M (``mmask`` false) read zeros.
    """
    offs_k = tl.arange(0, _LBK)
    if SLICES == 1:
        acc_i = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.int32)
        xrun = xrows + offs_k[None, :]
        for t in range(t_lo, t_hi):
            a = int4_tile_as_int8(tl.load(wbase + t * w_step, mask=nmask[:, None], other=0), BLOCK_N, ASM)
            xq = tl.load(xrun + t * _LBK, mask=mmask[:, None], other=0)
            p = tl.dot(a, tl.trans(xq)) >> 4  # int32 sum of q * x, exact
            if GROUP_SCALE:
                s2 = tl.load(ws_ptr + rows * NG + (t * _LBK) // G, mask=nmask, other=0).to(tl.int32)
                acc_i += p * s2[:, None]
            else:
                acc_i += p
        acc = acc_i.to(tl.float32)
    else:
        tl.static_assert(SLICES == 4)
        offs_j = tl.arange(0, 4)
        # [4, BLOCK_M, LBK]: slice j of token m's tile
        xrun = xrows[None, :, :] + offs_j[:, None, None] * _LBK + offs_k[None, None, :]
        xmask = mmask[None, :, None] & (offs_j < 3)[:, None, None]
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for t in range(t_lo, t_hi):
            a = int4_tile_as_int8(tl.load(wbase + t * w_step, mask=nmask[:, None], other=0), BLOCK_N, ASM)
            xq = tl.reshape(tl.load(xrun + t * (4 * _LBK), mask=xmask, other=0), [4 * BLOCK_M, _LBK])
            # [n, j, m] -> [n, m, j]: a thread holds the 4 slices of its columns (wgmma's accumulator repeats
            # every 16 columns), so the split below moves no data
            p = tl.permute(tl.reshape(tl.dot(a, tl.trans(xq)), [BLOCK_N, 4, BLOCK_M]), (0, 2, 1))
            # j = 2 a + b: split takes the last axis (b), then a
            p_even, p_odd = tl.split(tl.reshape(p, [BLOCK_N, BLOCK_M, 2, 2]))  # [n, m, a]: j = 0, 2 / 1, 3
            p0, p2 = tl.split(p_even)
            p1, _ = tl.split(p_odd)
            # each p_j is 16 sum q d_j; 256 p0 + p1 stays below 2**29 in int32, then one float32 FMA adds p2
            part = (p0 * 256 + p1).to(tl.float32) * 16.0 + p2.to(tl.float32) * 0.0625
            if GROUP_SCALE:
                acc += part * tl.load(ws_ptr + rows * NG + (t * _LBK) // G, mask=nmask, other=0)[:, None]
            else:
                acc += part
    return acc
