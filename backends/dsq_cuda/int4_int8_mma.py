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
``f * SW + s``). The activations are put in that order once per call (:func:`dsq_cuda.slab.int8_mma_order`),
and the decode is register renaming only: in the sm_90 SASS of the kernel the main loop has no ``PRMT``.
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
