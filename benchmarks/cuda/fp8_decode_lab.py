"""Feasibility probe: int4 weight codes decoded straight to e4m3 bytes (byte-permute lookup) for fp8 tensor-core MMAs,
against today's int4 -> bf16 decode, in a minimal copy of mma_decode_kernel's row-tile K loop.

    python benchmarks/cuda/fp8_decode_lab.py --check     (CPU: TRITON_INTERPRET=1 is set by the script itself)
    python benchmarks/cuda/fp8_decode_lab.py --sass      (any machine: compiles for sm_90 with Triton's ptxas)
    python benchmarks/cuda/fp8_decode_lab.py --gpu       (a CUDA GPU: the inline-asm kernels' error and time)

What it models. ``y[m, n] = sum_t s[n, t] * sum_{k in tile t} q[n, k] x[m, k]``: int4 codes ``q = u - 8`` (u the
stored nibble), one float32 scale per 128-input group (= one row tile), activations that are e4m3 values
(W4AFP8's per-token codes; the per-token scale belongs to the epilogue and is left out). Weights are row tiles
``[tiles, N, 16]`` int32 as dsq_cuda.slab.to_row_tiles makes them: nibble f of word s of (tile t, row n) is the
code of input ``t*128 + f*16 + s``. A program owns BLOCK_N = 64 rows and BLOCK_M = 16 tokens, 4 warps, 3 stages,
loops over K tiles, multiplies ``part = tl.dot(a, x^T, part)`` with the decoded weights as wgmma's register operand
A (D fields, ``[64, 16 D]``, per dot, as mma_decode_kernel's DOT_FIELDS) and flushes ``acc += part * s`` at each
tile end (as mma_decode_kernel._mma_step's FLUSH does). Each variant reads x in its own element order inside a
tile (a permutation, like dsq_cuda.slab.pair_order), made by the host.

Two variants (constexpr FP8):
  A (FP8 = False, today): int4 -> bf16. Two codes of a field per ``shr`` + ``lop3`` (magic 0x43004300, the
    bf16 pair ``128 + u``), one packed bf16 subtraction of 136, bf16 ``tl.dot`` (wgmma k16). x is bf16 holding
    the e4m3 values (as dsq_cuda.mm passes W4AFP8's codes: no conversion in the loop). Element order: the pair
    order of mma_decode_kernel (element 2p + e of field F = nibble F % 4 + 4e of word 2p + F // 4).
  B (FP8 = True): int4 -> e4m3 bytes with ``prmt.b32`` (4 selector nibbles in the low 16 bits of a register,
    8 table bytes in two registers), fp8 ``tl.dot`` (wgmma k32, twice the bf16 rate; needs K >= 32 a dot, so
    D >= 2) on x given as uint8 bits (the kernel reads them through a float8e4nv pointer: a bitcast of the loaded
    tensor instead costs a shared-memory round trip a dot). One invocation (pack = 4) takes 4 consecutive words
    and returns field F' = 2j + h as 4 bytes: byte i = code of nibble 4h + i of word j. The decode of 4 codes
    (``sel`` = the word, shifted right 16 for h = 1):
        n = prmt(TN, sel)            u < 8: TN[u] = e4m3(u - 8) / 2    u >= 8: sign-replicate of TN[u & 7] = 0x00
        p = prmt(TP, sel ^ 0x8888)   u >= 8: TP[u - 8] = e4m3(u - 8)   u < 8: sign-replicate of TP[u] = 0x00
        e4m3 bytes = 2 n + p         (one IMAD; every negative e4m3 integer is even, every byte sum < 256: no carry)
    Bit 7 of any prmt output depends only on the 3 index bits of its selector nibble, so no bitwise mix of
    prmt outputs can give the sign (it is bit 3 of the nibble): the doubling carries it instead. Per word
    (8 codes): 1 shift, 2 ``xor``, 4 ``prmt``, 2 ``mad``. Options: LUT = 1 loads the tables' first words per row
    (with immediates ptxas copies a uniform register into an ordinary one before every prmt); MULHI makes the high
    half's selectors with ``mul.hi`` (FMA pipe) instead of ``shr`` + ``xor`` (integer ALU pipe, as the prmts);
    CHAIN = False writes ``part += tl.dot(a, x^T)``; IMPRECISE sets the dot's max_num_imprecise_acc.

Modes:
  --check  Runs the kernel's math with the plain-Triton reference decode (no inline asm: shifts, masks and an
           emulation of the same prmt / mad lookup, then the byte bitcast to float8e4nv) under TRITON_INTERPRET=1
           on random data, for both variants, against a float64 torch computation; and checks the lookup bytes
           in plain Python against ``torch.float8_e4m3fn`` (all 16 nibbles in every selector position).
  --sass   Compiles both variants for sm_90 (TRITON_INTERPRET must be unset) and prints, per variant and per
           D, the main K loop's SASS (the largest backward-branch loop = one K tile = 64 codes a thread) by
           opcode and issue pipe, registers, spills, shared memory, and the wgmma forms of the PTX (A operand
           from registers ``{%r..}`` or from shared memory, a descriptor ``%rd..``). ``--dump DIR`` keeps the
           SASS / PTX / TTGIR.
  --gpu    Runs the inline-asm kernels on a CUDA GPU against float64 and times them (see run_gpu).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import subprocess
import sys

if "--check" in sys.argv and "--sass" not in sys.argv and "--gpu" not in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import sass_ops  # noqa: E402  (benchmarks/cuda, this script's folder: cuobjdump's SASS and register count)
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

SL = 16  # words per row of a tile; a tile covers 8 * SL = 128 inputs (one scale group)
LBK = 8 * SL
_SL, _LBK = tl.constexpr(SL), tl.constexpr(LBK)  # the same, for the kernels


def e4m3_byte(v: float) -> int:
    """The e4m3 (float8_e4m3fn) bit pattern of ``v``."""
    return int(torch.tensor([v]).to(torch.float8_e4m3fn).view(torch.uint8).item())


#: the lookup's two 8-byte tables, byte i of a table = entry i (prmt's {b, a}: entries 0-3 in a, 4-7 in b)
TN_BYTES = [e4m3_byte(u - 8.0) // 2 for u in range(8)]  # u < 8 (q = -8 .. -1): half the (even) e4m3 byte
TP_BYTES = [e4m3_byte(float(q)) for q in range(8)]  # u >= 8 (q = 0 .. 7)


def _word(b: list[int]) -> int:
    return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24


TN_LO, TN_HI, TP_LO, TP_HI = _word(TN_BYTES[:4]), _word(TN_BYTES[4:]), _word(TP_BYTES[:4]), _word(TP_BYTES[4:])
_TN_LO, _TN_HI, _TP_LO, _TP_HI = (tl.constexpr(v) for v in (TN_LO, TN_HI, TP_LO, TP_HI))  # for the kernels


def prmt(a: int, b: int, c: int) -> int:
    """PTX ``prmt.b32 d, a, b, c`` (default mode) on Python ints: byte i of d is byte ``c[4i+2:4i]`` of ``{b, a}``,
    or that byte's bit 7 replicated when ``c[4i+3]`` is set."""
    src = (b & 0xFFFFFFFF) << 32 | (a & 0xFFFFFFFF)
    d = 0
    for i in range(4):
        nib = (c >> (4 * i)) & 15
        byte = (src >> (8 * (nib & 7))) & 0xFF
        if nib & 8:
            byte = 0xFF if byte & 0x80 else 0
        d |= byte << (8 * i)
    return d


def lut_decode(sel: int) -> int:
    """The lookup of variant B on the 4 nibbles in ``sel[15:0]``: 4 e4m3 bytes, as the PTX computes them."""
    return (2 * prmt(TN_LO, TN_HI, sel) + prmt(TP_LO, TP_HI, sel ^ 0x8888)) & 0xFFFFFFFF


def check_lut() -> bool:
    """Every nibble u in every selector position decodes to the e4m3 byte of u - 8, the 32-bit sum has no carry
    between bytes, and the 16-entry logical table is exactly e4m3(u - 8)."""
    ok = True
    table = [(2 * TN_BYTES[u] if u < 8 else TP_BYTES[u - 8]) for u in range(16)]
    for u in range(16):
        want = e4m3_byte(u - 8.0)
        ok &= table[u] == want
        for pos in range(4):  # u at selector nibble pos, the other nibbles every value
            for other in range(16):
                sel = 0
                for i in range(4):
                    sel |= (u if i == pos else (other + i) % 16) << (4 * i)
                ok &= ((lut_decode(sel) >> (8 * pos)) & 0xFF) == want
    g = torch.Generator().manual_seed(1)
    for w in torch.randint(0, 2**32, (2000,), generator=g, dtype=torch.int64).tolist():
        for h in range(2):
            got = lut_decode((w >> (16 * h)) & 0xFFFF)
            ok &= all((got >> (8 * i)) & 0xFF == e4m3_byte(((w >> (4 * (4 * h + i))) & 15) - 8.0) for i in range(4))
    print(f"LUT bytes: TN {[hex(b) for b in TN_BYTES]}, TP {[hex(b) for b in TP_BYTES]}; logical table "
          f"{[hex(b) for b in table]}: {'OK' if ok else 'WRONG'}")
    return ok


def _asm_bf16(field: int) -> str:
    """dsq_cuda.mma_decode_kernel._asm_text(field, 4, f16=False): field ``field`` of words ($1, $2) = 2p, 2p + 1 as a
    bf16 pair ``128 + u``."""
    src, sh = ("$1" if field < 4 else "$2"), (field % 4) * 4
    if sh == 0:
        return f"lop3.b32 $0, {src}, 0x000F000F, 0x43004300, 0xEA;"
    return f"{{ .reg .b32 t; shr.u32 t, {src}, {sh}; lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xEA; }}"


def _asm_fp8(field: int, loaded: bool = False, mulhi: bool = False) -> str:
    """Field F' = 2j + h of words ($1 .. $4) = 4p .. 4p + 3 as 4 e4m3 bytes: nibbles 4h .. 4h + 3 of word j.
    ``loaded``: the tables' low words are operands $5 (TN) and $9 (TP), per-row values the kernel loaded once;
    as immediates, ptxas keeps them in uniform registers and copies one into an ordinary register (IMAD.U32) for
    every prmt, whose first table operand must be one. ``mulhi``: the high half's selectors made with ``mul.hi``
    by 2**16 (IMAD.HI, the FMA pipe) from the word and from ``word ^ 0x88888888`` (one xor for both halves; ptxas
    merges the two fields' copies), instead of ``shr`` and an xor per half (SHF, LOP3: the integer ALU pipe, which
    the prmts also use)."""
    j, h = divmod(field, 2)
    w = f"${1 + j}"
    if mulhi:
        sel = f"xor.b32 wx, {w}, 0x88888888; " + (f"mul.hi.u32 s, {w}, 65536; mul.hi.u32 x, wx, 65536; " if h
                                                   else f"mov.b32 s, {w}; mov.b32 x, wx; ")
    else:
        sel = (f"shr.u32 s, {w}, 16; " if h else f"mov.b32 s, {w}; ") + "xor.b32 x, s, 0x8888; "
    lows = ("mov.b32 tn0, $5; mov.b32 tp0, $9; " if loaded
            else f"mov.b32 tn0, {TN_LO:#010x}; mov.b32 tp0, {TP_LO:#010x}; ")
    return ("{ .reg .b32 s, x, wx, n, p, tn0, tn1, tp0, tp1; " + sel + lows +
            f"mov.b32 tn1, {TN_HI:#010x}; mov.b32 tp1, {TP_HI:#010x}; "
            "prmt.b32 n, tn0, tn1, s; prmt.b32 p, tp0, tp1, x; mad.lo.u32 $0, n, 2, p; }")


_ASM_BF16 = tl.constexpr(tuple(_asm_bf16(f) for f in range(8)))
#: field F with (loaded, mulhi) at F + 8 * (2 * loaded + mulhi)
_ASM_FP8 = tl.constexpr(tuple(_asm_fp8(f, loaded, mulhi) for loaded in (False, True) for mulhi in (False, True)
                              for f in range(8)))


@triton.jit
def _prmt_ref(lo, hi, sel):
    """prmt of one selector nibble per element (int32 tensors) with a constant table ``{hi, lo}``."""
    idx = sel & 7
    word = tl.where(idx < 4, lo, hi)
    byte = (word >> ((idx & 3) * 8)) & 0xFF
    return tl.where((sel & 8) != 0, tl.where(byte >= 128, 255, 0), byte)


@triton.jit
def _field_ref(words, F: tl.constexpr, FP8: tl.constexpr, BLOCK_N: tl.constexpr):
    """Field F decoded with plain Triton ops, float32 ``[BLOCK_N, SL]`` (A: ``128 + u`` as the asm's bf16; B: the e4m3
    value of u - 8, through the same lookup as the asm, bitcast from its byte)."""
    if FP8:
        J: tl.constexpr = F // 2
        H: tl.constexpr = F % 2
        q4 = tl.reshape(words, [BLOCK_N, 4, 2, 2])  # word 4p + 2a + b at [n, p, a, b]
        wa, wb = tl.split(q4)
        w0, w1 = tl.split(wa)
        w2, w3 = tl.split(wb)
        if J == 0:
            w = w0
        elif J == 1:
            w = w2  # word 4p + 1: a = 0, b = 1
        elif J == 2:
            w = w1
        else:
            w = w3
        i = tl.arange(0, 4)
        u = (w[:, :, None] >> (4 * (4 * H + i))[None, None, :]) & 15  # [n, p, i]: nibble 4h + i of word 4p + J
        n = _prmt_ref(_TN_LO, _TN_HI, u)
        p = _prmt_ref(_TP_LO, _TP_HI, u ^ 8)
        byte = (2 * n + p).to(tl.uint8)
        v = byte.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        return tl.reshape(v, [BLOCK_N, _SL])  # element 4p + i
    else:
        w_even, w_odd = tl.split(tl.reshape(words, [BLOCK_N, _SL // 2, 2]))
        w = w_even if F < 4 else w_odd
        SH: tl.constexpr = (F % 4) * 4
        lo = ((w >> SH) & 15) + 128
        hi = ((w >> (SH + 16)) & 15) + 128
        return tl.reshape(tl.join(lo, hi), [BLOCK_N, _SL]).to(tl.float32)


@triton.jit
def _field(words, luts, F: tl.constexpr, FP8: tl.constexpr, ASM: tl.constexpr, BLOCK_N: tl.constexpr,
           MULHI: tl.constexpr):
    if not ASM:
        return _field_ref(words, F, FP8, BLOCK_N)
    elif FP8 and luts is not None:
        return tl.inline_asm_elementwise(_ASM_FP8[F + 16 + 8 * MULHI], "=r" + ",r" * 12, [words, luts[0], luts[1]],
                                         dtype=tl.float8e4nv, is_pure=True, pack=4)
    elif FP8:
        return tl.inline_asm_elementwise(_ASM_FP8[F + 8 * MULHI], "=r,r,r,r,r", [words], dtype=tl.float8e4nv,
                                         is_pure=True, pack=4)
    else:
        return tl.inline_asm_elementwise(_ASM_BF16[F], "=r,r,r", [words], dtype=tl.bfloat16, is_pure=True, pack=2)


@triton.jit
def _cat_k(lo, hi, BLOCK_N: tl.constexpr, W: tl.constexpr):
    """``[BLOCK_N, W]`` slabs of consecutive inputs side by side along K (mma_decode_kernel._cat_k)."""
    return tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), [BLOCK_N, 2 * W])


@triton.jit
def _fields(words, luts, F0: tl.constexpr, D: tl.constexpr, FP8: tl.constexpr, ASM: tl.constexpr,
            BLOCK_N: tl.constexpr, MULHI: tl.constexpr):
    """Fields F0 .. F0 + D - 1 joined along K: ``[BLOCK_N, D * SL]``."""
    if D == 1:
        a = _field(words, luts, F0, FP8, ASM, BLOCK_N, MULHI)
    elif D == 2:
        a = _cat_k(_field(words, luts, F0, FP8, ASM, BLOCK_N, MULHI),
                   _field(words, luts, F0 + 1, FP8, ASM, BLOCK_N, MULHI), BLOCK_N, _SL)
    elif D == 4:
        a = _cat_k(_fields(words, luts, F0, 2, FP8, ASM, BLOCK_N, MULHI),
                   _fields(words, luts, F0 + 2, 2, FP8, ASM, BLOCK_N, MULHI), BLOCK_N, 2 * _SL)
    else:
        a = _cat_k(_fields(words, luts, F0, 4, FP8, ASM, BLOCK_N, MULHI),
                   _fields(words, luts, F0 + 4, 4, FP8, ASM, BLOCK_N, MULHI), BLOCK_N, 4 * _SL)
    return a


@triton.jit
def _dot(a, b, acc, IMPRECISE: tl.constexpr):
    if IMPRECISE > 0:
        return tl.dot(a, b, acc, max_num_imprecise_acc=IMPRECISE)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def lab_kernel(x_ptr, w_ptr, ws_ptr, out_ptr, lut_ptr, M, N, TILES, stride_xm, stride_om, FP8: tl.constexpr,
               ASM: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
               LUT: tl.constexpr = 0, MULHI: tl.constexpr = False, CHAIN: tl.constexpr = True,
               IMPRECISE: tl.constexpr = 0):
    """``out[m, n] = sum_t ws[n, t] * (decoded tile t of row n) . x[m, tile t]``. x: [M, TILES * 128] in the
    variant's element order (bf16 for A, e4m3 bits as uint8 for B); w: [TILES, N, 16] int32 row tiles; ws: [N, TILES]
    float32; out: [M, N] float32. N a multiple of BLOCK_N.
    LUT (B): 0 the tables as immediates in the PTX; 1 their low words loaded per row from ``lut_ptr`` ([TN_LO, TP_LO,
    TN_LO, TP_LO] int32) before the loop (see _asm_fp8; a scalar load does not help: ptxas keeps a uniform value in
    a uniform register just the same). MULHI (B): see _asm_fp8. CHAIN: ``part = tl.dot(a, x^T, part)`` (one MMA
    chain per tile); False: ``part += tl.dot(a, x^T)`` (for fp8 Triton does not fold the add: a float32 FADD per
    accumulator element and dot). IMPRECISE (B): the dot's max_num_imprecise_acc (0: Triton's default, on sm_90
    2**30: no promotion; 32: each k32 wgmma promoted to float32)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mmask = offs_m < M
    wbase = w_ptr + rows[:, None].to(tl.int64) * _SL + tl.arange(0, _SL)[None, :]
    if FP8 and ASM:  # the uint8 bits as e4m3 in memory: the copy into shared memory feeds the wgmma directly
        x_ptr = x_ptr.to(tl.pointer_type(tl.float8e4nv), bitcast=True)
    xrun = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + tl.arange(0, D * _SL)[None, :]
    luts = None
    if FP8 and ASM and LUT == 1:  # per-row copies at addresses the compilers cannot prove uniform (lut_ptr holds
        # the words twice), so ptxas keeps them in ordinary registers
        alt = (rows >= N).to(tl.int32) * 2
        luts = (tl.load(lut_ptr + alt)[:, None], tl.load(lut_ptr + 1 + alt)[:, None])
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    part = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for t in range(0, TILES):
        words = tl.load(wbase + t * N * _SL)
        for r in tl.static_range(8 // D):
            xf = tl.load(xrun + (t * _LBK + r * D * _SL), mask=mmask[:, None], other=0.0)
            a = _fields(words, luts, r * D, D, FP8, ASM, BLOCK_N, MULHI)
            if FP8 and not ASM:
                xf = xf.to(tl.float8e4nv, bitcast=True)
            if not ASM:
                if not FP8:
                    a = a - 136.0
                part += tl.dot(a, tl.trans(xf.to(tl.float32)), input_precision="ieee")
            else:
                if not FP8:
                    a = a - 136
                if CHAIN:
                    part = _dot(a, tl.trans(xf), part, IMPRECISE)
                else:
                    part += _dot(a, tl.trans(xf), tl.zeros_like(part), IMPRECISE)
        s = tl.load(ws_ptr + rows * TILES + t)
        acc += part * s[:, None]
        part = tl.zeros_like(part)
    tl.store(out_ptr + offs_m[None, :] * stride_om + rows[:, None], acc, mask=mmask[None, :])


# ---------------------------------------------------------------------------------------------------- host side

LUT_WORDS = torch.tensor([TN_LO, TP_LO, TN_LO, TP_LO], dtype=torch.int32)


def row_tiles(u: torch.Tensor) -> torch.Tensor:
    """Nibbles ``u [N, K]`` (0..15, K a multiple of 128) -> row tiles int32 ``[K / 128, N, 16]``: nibble f of word s
    of (t, n) = u[n, t*128 + f*16 + s]."""
    n, k = u.shape
    v = u.to(torch.int64).reshape(n, k // LBK, 8, SL)  # [n, t, f, s]
    w = (v << (4 * torch.arange(8, device=u.device)).view(1, 1, 8, 1)).sum(dim=2)
    w = torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)
    return w.permute(1, 0, 2).contiguous()


def source(fp8: bool) -> torch.Tensor:
    """Position c of a tile's x in the variant's order holds input ``source[c]`` of the tile."""
    pos = torch.arange(LBK)
    f, c = pos // SL, pos % SL
    if fp8:  # field F' = 2j + h, element c = 4p + i: nibble 4h + i of word 4p + j
        j, h, p, i = f // 2, f % 2, c // 4, c % 4
        return (4 * h + i) * SL + 4 * p + j
    # pair order (dsq_cuda.slab.pair_order): element 2p + e of field F = nibble F % 4 + 4e of word 2p + F // 4
    return (f % 4 + 4 * (c % 2)) * SL + 2 * (c // 2) + f // 4


def problem(m: int, n: int, k: int, seed: int = 0, device: str = "cpu"):
    """Random nibbles u [N, K], e4m3 activations x [M, K], group scales ws [N, K / 128] and the float64 result."""
    g = torch.Generator(device=device).manual_seed(seed)
    tiles = k // LBK
    u = torch.randint(0, 16, (n, k), generator=g, device=device)
    x = (torch.randn(m, k, generator=g, device=device) * 3).to(torch.float8_e4m3fn)
    ws = torch.rand(n, tiles, generator=g, device=device) * 0.02 + 0.001
    prods = torch.einsum("mtk,ntk->mnt", x.double().view(m, tiles, LBK), (u - 8).double().view(n, tiles, LBK))
    want = (prods * ws.double()[None]).sum(dim=2)
    return u, x, ws, want


def variant_x(x: torch.Tensor, fp8: bool) -> torch.Tensor:
    """x in the variant's element order and dtype (B: e4m3 bits as uint8; A: bf16 holding the e4m3 values)."""
    tiles = x.shape[1] // LBK
    perm = (source(fp8)[None, :] + LBK * torch.arange(tiles)[:, None]).reshape(-1).to(x.device)
    xp = x[:, perm].contiguous()
    return xp.view(torch.uint8) if fp8 else xp.float().to(torch.bfloat16)


def run_check(m: int = 5, n: int = 128, tiles: int = 3, seed: int = 0) -> bool:
    """Both variants' reference path in the interpreter against float64."""
    u, x, ws, want = problem(m, n, tiles * LBK, seed)
    w = row_tiles(u)
    ok = True
    for fp8 in (False, True):
        xin = variant_x(x, fp8)
        for d in (1, 2, 8):
            out = torch.zeros(m, n, dtype=torch.float32)
            lab_kernel[(n // 64,)](xin, w, ws, out, LUT_WORDS, m, n, tiles, xin.stride(0), out.stride(0), FP8=fp8,
                                   ASM=False, D=d, BLOCK_N=64, BLOCK_M=16)
            err = (out.double() - want).abs().max().item() / want.abs().max().item()
            good = err < 1e-5
            ok &= good
            print(f"check {'B (e4m3 LUT)' if fp8 else 'A (bf16)    '} D={d}: max |out - float64| / max |ref| = "
                  f"{err:.2e} -> {'OK' if good else 'FAIL'}")
    return ok


# ---------------------------------------------------------------------------------------------------- GPU side

GPU_CONFIGS: list[tuple[str, bool, int, dict]] = [
    ("A bf16, D=4", False, 4, {}), ("A bf16, D=8", False, 8, {}),
    ("B fp8, immediate tables, D=8", True, 8, {}),
    ("B fp8, loaded tables, D=4", True, 4, dict(LUT=1)), ("B fp8, loaded tables, D=8", True, 8, dict(LUT=1)),
    ("B fp8, loaded tables, mul.hi, D=8", True, 8, dict(LUT=1, MULHI=True)),
    ("B fp8, loaded, mul.hi, D=8, imprecise 32", True, 8, dict(LUT=1, MULHI=True, IMPRECISE=32)),
]


def launch(x: torch.Tensor, w: torch.Tensor, ws: torch.Tensor, out: torch.Tensor, lut: torch.Tensor, fp8: bool, d: int,
           options: dict) -> None:
    """lab_kernel with its inline asm (a CUDA GPU), 4 warps, 3 stages."""
    m, n = out.shape
    lab_kernel[(n // 64,)](x, w, ws, out, lut, m, n, w.shape[0], x.stride(0), out.stride(0), FP8=fp8, ASM=True, D=d,
                           BLOCK_N=64, BLOCK_M=16, num_warps=4, num_stages=3, **options)


def run_gpu(shapes: list[tuple[int, int]], ms: list[int]) -> bool:
    """The inline-asm kernels on a CUDA GPU against float64 (A to float32 accuracy; B's wgmma accumulates fp8
    products in the tensor core's own precision, so its error is reported and only checked against 1e-2, far below
    what a wrong table entry or element order gives), and their time (triton.testing.do_bench, median; weights
    of one problem, so partly L2-resident at small N * K: a toy timing, not the fused-MoE kernel)."""
    from triton.testing import do_bench

    dev = "cuda"
    lut = LUT_WORDS.to(dev)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print("| N x K | M | variant | max abs err / max abs ref | time us |")
    print("|---|---|---|---|---|")
    ok = True
    for n, k in shapes:
        for m in ms:
            u, x, ws, want = problem(m, n, k, seed=n + k + m, device=dev)
            w = row_tiles(u)
            xs = {fp8: variant_x(x, fp8) for fp8 in (False, True)}
            for name, fp8, d, options in GPU_CONFIGS:
                xin = xs[fp8]
                out = torch.empty(m, n, dtype=torch.float32, device=dev)
                call = functools.partial(launch, xin, w, ws, out, lut, fp8, d, options)
                try:
                    call()
                    torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001 (report and go on)
                    print(f"| {n} x {k} | {m} | {name} | FAILED: {type(e).__name__}: {str(e).splitlines()[-1:]} | |")
                    ok = False
                    continue
                err = (out.double() - want).abs().max().item() / want.abs().max().item()
                good = err < (1e-5 if not fp8 else 1e-2)
                ok &= good
                us = do_bench(call, return_mode="median") * 1e3
                print(f"| {n} x {k} | {m} | {name} | {err:.2e}{'' if good else ' FAIL'} | {us:.1f} |")
    return ok


# ---------------------------------------------------------------------------------------------------- SASS side

def compile_variant(fp8: bool, d: int, stages: int = 3, **options: int):
    """lab_kernel for sm_90 as a launch would compile it (multiple-of-16 hints on pointers, N and strides);
    ``options``: LUT, MULHI, CHAIN, IMPRECISE."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {"x_ptr": "*u8" if fp8 else "*bf16", "w_ptr": "*i32", "ws_ptr": "*fp32", "out_ptr": "*fp32",
           "lut_ptr": "*i32", "M": "i32", "N": "i32", "TILES": "i32", "stride_xm": "i32", "stride_om": "i32"}
    consts = dict(dict(LUT=0, MULHI=False, CHAIN=True, IMPRECISE=0), FP8=fp8, ASM=True, D=d, BLOCK_N=64, BLOCK_M=16,
                  **options)
    names = list(sig)
    attrs = {(names.index(a),): [["tt.divisibility", 16]]
             for a in ("x_ptr", "w_ptr", "ws_ptr", "out_ptr", "lut_ptr", "N", "stride_xm", "stride_om")}
    src = ASTSource(fn=lab_kernel, signature=dict(sig, **{c: "constexpr" for c in consts}), constexprs=consts,
                    attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=stages))


def _instructions(sass: str) -> list[tuple[int, str]]:
    return [(int(m.group(1), 16), m.group(2)) for m in
            (re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);", line) for line in sass.splitlines()) if m]


def _opcode(text: str) -> str:
    return re.match(r"(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", text).group(1)


KEY = ("PRMT", "LOP3", "SHF", "LEA", "IMAD", "IADD3", "HFMA2", "HADD2", "HGMMA", "QGMMA", "WARPGROUP", "LDS", "STS",
       "LDSM", "LDG", "LDGSTS", "F2FP", "I2F", "F2F", "FFMA", "FMUL", "FADD", "BAR", "DEPBAR", "SHFL", "MOV")


#: the issue pipes the opcodes go to (as Nsight Compute names them; the integer ALU and the FMA pipe each take a
#: warp instruction every other cycle per SM sub-partition on Hopper)
ALU_OPS = ("LOP3", "SHF", "PRMT", "IADD3", "LEA", "SEL", "ISETP", "MOV")
FMA_OPS = ("IMAD", "FFMA", "FADD", "FMUL", "HADD2", "HFMA2", "HMUL2")


def wgmma_forms(ptx: str) -> list[str]:
    """The distinct wgmma instructions of the PTX: shape, types, and where operand A comes from."""
    forms = collections.Counter()
    for line in ptx.splitlines():
        m = re.search(r"(wgmma\.mma_async[\w.]*)\s+\{[^}]*\},\s*(\{[^}]*\}|%rd\d+)", line)
        if m:
            forms[f"{m.group(1)} A from {'registers' if m.group(2).startswith('{') else 'shared (descriptor)'}"] += 1
    return [f"{n} x {f}" for f, n in forms.items()]


def run_sass(dots: list[int], stages: int, dump: str | None) -> int:
    codes = 64 * LBK // 128  # codes per thread per tile: BLOCK_N x 128 inputs over 128 threads
    print(f"triton {triton.__version__}, sm_90, BLOCK_N 64, BLOCK_M 16, 4 warps, {stages} stages; the main loop is one "
          f"K tile = 64 x 128 codes per CTA = {codes} codes per thread; 'per 1024 codes' counts warp instructions "
          f"(4 warps x loop instructions / 8)")
    configs: list[tuple[str, bool, int, dict]] = []  # (label, FP8, D, options)
    for d in dots:
        configs.append((f"A bf16 decode, bf16 dot, D={d}", False, d, {}))
    for d in dots:
        configs.append((f"B e4m3 LUT, immediate tables, D={d}", True, d, {}))
        configs.append((f"B e4m3 LUT, tables loaded per row, D={d}", True, d, dict(LUT=1)))
        configs.append((f"B e4m3 LUT, tables loaded per row, mul.hi, D={d}", True, d, dict(LUT=1, MULHI=True)))
    top = max(dots)
    configs.append((f"B loaded, mul.hi, D={top}, part += dot (no chain)", True, top, dict(LUT=1, MULHI=True,
                                                                                        CHAIN=False)))
    configs.append((f"B loaded, mul.hi, D={top}, max_num_imprecise_acc=32", True, top, dict(LUT=1, MULHI=True,
                                                                                           IMPRECISE=32)))
    rows = []
    for name, fp8, d, options in configs:
        try:
            compiled = compile_variant(fp8, d, stages, **options)
        except Exception as e:  # noqa: BLE001 (report and go on)
            cause: BaseException | None = e
            while cause.__cause__ is not None or cause.__context__ is not None:  # the innermost: the reason
                cause = cause.__cause__ or cause.__context__
            print(f"\n{name}: compile FAILED: {type(cause).__name__}: {str(cause).strip().splitlines()[-1:]}")
            rows.append((name, None, None, None, None, None))
            continue
        sass = sass_ops._sass(compiled)
        if dump:
            os.makedirs(dump, exist_ok=True)
            tag = re.sub(r"\W+", "_", name).strip("_")
            for ext, text in (("sass", sass), ("ptx", compiled.asm["ptx"]), ("ttgir", compiled.asm["ttgir"])):
                with open(os.path.join(dump, f"{tag}.{ext}"), "w") as f:
                    f.write(text)
        loop = sass_ops.main_loop_opcodes(sass)  # the largest loop: one K tile
        whole = [op for op in map(_opcode, (t for _, t in _instructions(sass))) if op != "NOP"]
        cnt = collections.Counter(loop)
        regs = sass_ops.registers(compiled)
        spills = len(re.findall(r"\bSTL(?:\.\w+)*\s", sass))
        mma = cnt["HGMMA"] + cnt["QGMMA"]
        alu, fma = sum(cnt[op] for op in ALU_OPS), sum(cnt[op] for op in FMA_OPS)
        print(f"\n{name}")
        print(f"  main loop: {len(loop)} instructions per tile = {len(loop) / codes:.3f} per code per thread = "
              f"{len(loop) * 4 / 8:.1f} warp instructions per 1024 codes; whole kernel {len(whole)}")
        print("  loop key opcodes: " + ", ".join(f"{op} {cnt[op]}" for op in KEY if cnt[op]))
        print(f"  loop integer-ALU pipe ({'/'.join(ALU_OPS)}) {alu}, FMA pipe ({'/'.join(FMA_OPS)}) {fma}")
        print("  loop top opcodes: " + ", ".join(f"{op} {n}" for op, n in cnt.most_common(12)))
        print(f"  registers {regs}, local stores (spills) {spills}, shared memory {compiled.metadata.shared} B")
        print("  wgmma in PTX: " + ("; ".join(wgmma_forms(compiled.asm["ptx"])) or "none"))
        mm = [t.strip() for _, t in _instructions(sass) if re.search(r"\b[HQ]GMMA\b", t)]
        print(f"  first tensor-core instruction: {mm[0] if mm else '-'}")
        a_regs = "registers" if any("A from registers" in f for f in wgmma_forms(compiled.asm["ptx"])) else "shared"
        rows.append((name, len(loop), len(loop) / codes, f"{alu} / {fma}", regs, f"{mma} ({a_regs})"))
    print("\n| variant | loop instructions per tile | per code per thread | ALU / FMA pipe | registers | MMA per tile "
          "(A from) |")
    print("|---|---|---|---|---|---|")
    for name, n, per, pipes, regs, mma in rows:
        if n is None:
            print(f"| {name} | compile failed | | | | |")
        else:
            print(f"| {name} | {n} | {per:.3f} | {pipes} | {regs} | {mma} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="LUT bytes and the reference math in the interpreter")
    ap.add_argument("--sass", action="store_true", help="compile both variants for sm_90 and count instructions")
    ap.add_argument("--dots", default="1,2,4,8", help="DOT_FIELDS values for --sass (fields per tl.dot)")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--dump", default=None, help="directory for the SASS / PTX / TTGIR of each variant")
    ap.add_argument("--gpu", action="store_true", help="run the inline-asm kernels on a CUDA GPU: error and time")
    ap.add_argument("--shapes", default="7168x2048,2048x7168,18432x7168", help="N x K for --gpu")
    ap.add_argument("--ms", default="1,16", help="token counts for --gpu")
    args = ap.parse_args()
    if not (args.check or args.sass or args.gpu):
        ap.error("give --check, --sass and/or --gpu")
    rc = 0
    if args.check and not os.environ.get("TRITON_INTERPRET"):  # with --sass / --gpu: the check in an interpreter
        env = dict(os.environ, TRITON_INTERPRET="1")
        rc |= subprocess.run([sys.executable, os.path.abspath(__file__), "--check"], env=env).returncode
    elif args.check:
        ok = check_lut()
        ok &= run_check()
        rc |= 0 if ok else 1
    if args.sass:
        if os.environ.get("TRITON_INTERPRET"):
            print("--sass needs TRITON_INTERPRET unset")
            return 2
        rc |= run_sass([int(d) for d in args.dots.split(",")], args.stages, args.dump)
    if args.gpu:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        rc |= 0 if run_gpu(shapes, [int(m) for m in args.ms.split(",")]) else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
