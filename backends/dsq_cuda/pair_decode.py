"""Decode of the pair-tile words of dsq_cuda.slab.to_pair_tiles into exact 16-bit floats, for the tensor-core decode
GEMM (dsq_cuda.mma_decode_kernel, whose docstring states the layout and the math).

Field f of a word pair (two adjacent inputs at bits ``4f'`` and ``4f' + 16``) becomes one bf16x2 / f16x2 register:

    raw = ((w >> 4f') & 0x000F000F) | 0x43004300     (bf16; f16: 0x64006400) = B + nibble, exactly
    int4  the caller subtracts B + 8 (+ zero point): the signed code
    int8  raw_lo + fma(raw_hi, 16, -(17 B + 128)) = the signed code (two packed FMAs, every step exact)

ASM = False is the Triton interpreter's path (no inline PTX): the same values in float32.
"""

from __future__ import annotations

import triton
import triton.language as tl


def _asm_text(field: int, bits: int, f16: bool) -> str:
    """PTX that decodes field ``field`` of a word pair ($1 = word 2p, $2 = word 2p + 1) into $0 (two 16-bit floats)."""
    magic = "0x64006400" if f16 else "0x43004300"
    if bits == 4:
        src, sh = ("$1" if field < 4 else "$2"), (field % 4) * 4
        if sh == 0:
            return f"lop3.b32 $0, {src}, 0x000F000F, {magic}, 0xEA;"
        return f"{{ .reg .b32 t; shr.u32 t, {src}, {sh}; lop3.b32 $0, t, 0x000F000F, {magic}, 0xEA; }}"
    fma = "fma.rn.f16x2" if f16 else "fma.rn.bf16x2"
    sixteen, one = ("0x4C004C00", "0x3C003C00") if f16 else ("0x41804180", "0x3F803F80")
    negc = "0xF448F448" if f16 else "0xC510C510"  # -(17 B + 128): -17536 (f16) / -2304 (bf16)
    sh = field * 4
    # packed 16-bit float operands must be registers (no immediates); ptxas folds the movs into constants
    return (f"{{ .reg .b32 lo, hi, c16, cneg, c1; mov.b32 c16, {sixteen}; mov.b32 cneg, {negc}; mov.b32 c1, {one}; "
            f"shr.u32 lo, $1, {sh}; shr.u32 hi, $2, {sh}; "
            f"lop3.b32 lo, lo, 0x000F000F, {magic}, 0xEA; lop3.b32 hi, hi, 0x000F000F, {magic}, 0xEA; "
            f"{fma} hi, hi, c16, cneg; {fma} $0, lo, c1, hi; }}")


# the PTX of every field, per (bits, 16-bit float type), indexed by field inside the kernels
_ASM_I4_BF16 = tl.constexpr(tuple(_asm_text(f, 4, False) for f in range(8)))
_ASM_I4_F16 = tl.constexpr(tuple(_asm_text(f, 4, True) for f in range(8)))
_ASM_I8_BF16 = tl.constexpr(tuple(_asm_text(f, 8, False) for f in range(4)))
_ASM_I8_F16 = tl.constexpr(tuple(_asm_text(f, 8, True) for f in range(4)))


@triton.jit
def _field_asm(words, F: tl.constexpr, BITS: tl.constexpr, F16: tl.constexpr):
    """Field F of a pair-tile word tile as exact 16-bit floats: ``B + u`` (int4) or the signed code (int8)."""
    if BITS == 4:
        if F16:
            out = tl.inline_asm_elementwise(_ASM_I4_F16[F], "=r,r,r", [words], dtype=tl.float16, is_pure=True, pack=2)
        else:
            out = tl.inline_asm_elementwise(_ASM_I4_BF16[F], "=r,r,r", [words], dtype=tl.bfloat16, is_pure=True,
                                            pack=2)
    else:
        if F16:
            out = tl.inline_asm_elementwise(_ASM_I8_F16[F], "=r,r,r", [words], dtype=tl.float16, is_pure=True, pack=2)
        else:
            out = tl.inline_asm_elementwise(_ASM_I8_BF16[F], "=r,r,r", [words], dtype=tl.bfloat16, is_pure=True,
                                            pack=2)
    return out


@triton.jit
def _field_ref(words, F: tl.constexpr, BITS: tl.constexpr, F16: tl.constexpr, BLOCK_N: tl.constexpr,
               SL: tl.constexpr):
    """The values of :func:`_field_asm` in float32, with plain Triton ops (the interpreter's path: its 16-bit
    float arithmetic works on the raw bits, so the caller subtracts in float32 and casts last)."""
    B: tl.constexpr = 1024 if F16 else 128
    w_even, w_odd = tl.split(tl.reshape(words, [BLOCK_N, SL // 2, 2]))
    if BITS == 4:
        w = w_even if F < 4 else w_odd
        SH: tl.constexpr = (F % 4) * 4
        lo = ((w >> SH) & 15) + B
        hi = ((w >> (SH + 16)) & 15) + B
    else:
        SH: tl.constexpr = F * 4
        lo = ((w_even >> SH) & 15) + ((w_odd >> SH) & 15) * 16 - 128
        hi = ((w_even >> (SH + 16)) & 15) + ((w_odd >> (SH + 16)) & 15) * 16 - 128
    return tl.reshape(tl.join(lo, hi), [BLOCK_N, SL]).to(tl.float32)


@triton.jit
def decode_field(words, F: tl.constexpr, BITS: tl.constexpr, F16: tl.constexpr, ASM: tl.constexpr,
                 BLOCK_N: tl.constexpr, SL: tl.constexpr):
    """Field F decoded: 16-bit floats (ASM) or float32 (the interpreter's path)."""
    if ASM:
        return _field_asm(words, F, BITS, F16)
    else:
        return _field_ref(words, F, BITS, F16, BLOCK_N, SL)


@triton.jit
def _cat_k(lo, hi, BLOCK_N: tl.constexpr, W: tl.constexpr):
    """Two ``[BLOCK_N, W]`` weight slabs of consecutive inputs side by side along K: ``[BLOCK_N, 2 W]``."""
    return tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), [BLOCK_N, 2 * W])  # [n, j, p] -> input p W + j


@triton.jit
def decode_fields(words, F0: tl.constexpr, D: tl.constexpr, BITS: tl.constexpr, F16: tl.constexpr,
                  ASM: tl.constexpr, BLOCK_N: tl.constexpr, SL: tl.constexpr):
    """Fields ``F0 .. F0 + D - 1`` side by side along K, ``[BLOCK_N, D * SL]`` (D = 1, 2, 4 or 8): the weights of
    ``D * SL`` consecutive inputs, for one MMA chain. Each thread already holds every field of its words, so
    the joins only rename registers (no data moves between threads)."""
    if D == 1:
        a = decode_field(words, F0, BITS, F16, ASM, BLOCK_N, SL)
    elif D == 2:
        a = _cat_k(decode_field(words, F0, BITS, F16, ASM, BLOCK_N, SL),
                   decode_field(words, F0 + 1, BITS, F16, ASM, BLOCK_N, SL), BLOCK_N, SL)
    elif D == 4:
        a = _cat_k(decode_fields(words, F0, 2, BITS, F16, ASM, BLOCK_N, SL),
                   decode_fields(words, F0 + 2, 2, BITS, F16, ASM, BLOCK_N, SL), BLOCK_N, 2 * SL)
    else:
        a = _cat_k(decode_fields(words, F0, 4, BITS, F16, ASM, BLOCK_N, SL),
                   decode_fields(words, F0 + 4, 4, BITS, F16, ASM, BLOCK_N, SL), BLOCK_N, 4 * SL)
    return a
