"""Fused prefill GEMM for weight-only packed weights (W4A16, W4A16_ASYM, W8A16) at large M: the int4 / int8 codes
are decoded inside the K loop and multiplied on tensor cores, so the weight is never written out in bf16.

Math (the reference's, dsq_cpu_reference): ``y[m, n] = sum_g s[n, g] * sum_{k in g} (q[n, k] - z[n, g]) x[m, k]
(+ bias[n])``, with q the signed code (int4 in [-8, 7], int8 in [-128, 127]), z the int4 zero point (W4A16_ASYM,
else 0), s the float32 scale of (row n, group g of G inputs); per channel (W8A16) one group spans K and s
multiplies in the epilogue. x is bf16 or fp16 ``[M, K]``; y ``[M, N]`` in x's dtype.

Exactness: ``q - z`` is an integer of magnitude <= 15 (int4) or <= 255 (int8), exact in bf16 and fp16, and so is
each product with x; the MMA sums a group in float32 (``part``), then ``acc += part * s[n, g]`` in float32. Only
the float32 summation order and the final rounding to x's dtype (round to nearest even) differ from the exact
result.

Layout (:func:`prefill_words`, made once per weight): int32 ``[Np, Kp / EPW]`` (EPW = 32 / bits codes a word; Np =
N rounded up to PAD_N, Kp = K to PAD_K; padding holds code 0), row-major like the canonical words, so a program's
``[BLOCK_N, BLOCK_K / EPW]`` word tile is a 16-byte-aligned row segment per weight row and no load needs an N mask.
Word (n, c) holds inputs ``EPW*c .. EPW*c + EPW - 1`` of row n, permuted inside the word: inputs ``2s`` and
``2s + 1`` sit in bit fields ``s`` and ``s + EPW / 2`` (:func:`field_of`), 16 bits apart. The magic number of
16-bit floats then decodes each pair with one 32-bit operation into the bf16x2 (f16x2) register that the MMA
operand holds anyway: ``(w >> s) & 0x000F000F | 0x43004300`` is ``(128 + nibble at bit s, 128 + nibble at bit
s + 16)`` exactly (f16: 0x64006400, 1024 +), so, per pair of weights:

    int4  a = magic(w >> 4s) + (-(B + 8 + z))                       shr, lop3, fma: 3 instructions (2 for s = 0)
    int8  lo = magic(w >> 8s), hi = magic(w >> 8s + 4),
          a = lo + (16 hi - (17 B + 128))                           2 shr, 2 lop3, 2 fma: 6 (5 for s = 0)

(every intermediate an integer the 16-bit float holds exactly; B = 128, or 1024 for f16). The pairs are joined in
registers to the ``[BLOCK_N, BLOCK_K]`` weight tile in input order, which ``tl.dot`` multiplies with the x tile
``[BLOCK_M, BLOCK_K]`` (loaded by Triton's software pipeliner): ``x @ W^T``, or with SWAP ``W @ x^T``.

ASM = False (the Triton interpreter, which cannot run PTX) decodes with plain integer ops to float32 and
multiplies in float32 (``input_precision="ieee"``): the same values.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq.errors import QuantInputError, UnsupportedError
from dsq.schemes import QuantScheme
from dsq_cuda._env import check_not_capturing, interpreting
from dsq_cuda.configs import Config
from dsq_cuda.mm_layout import group_of, prepare

#: padding of the layout: K to whole 128-input tiles (per channel), N to whole 256-row blocks (BLOCK_N <= 256
#: then needs no mask on word, scale or zero-point loads)
PAD_K = 128
PAD_N = 256
#: programs along M that share a band of N (L2 reuse of the weight tiles)
GROUP_M = 8
#: orientation of the MMA where a config does not say (its sixth entry): False ``x_tile @ W_tile^T`` (the decoded
#: weights are wgmma's B operand, which it reads from shared memory), True ``W_tile @ x_tile^T`` (weights as the A
#: operand; Triton 3.6 still staged them through shared memory in the lab)
SWAP = False


def field_of(p: int, bits: int) -> int:
    """The bit field (0 .. EPW - 1) of a prefill word holding the word's input ``p``: inputs ``2s`` and ``2s + 1``
    sit in fields ``s`` and ``s + EPW / 2``, 16 bits apart, so one 32-bit operation decodes the pair."""
    return p // 2 + (p % 2) * (16 // bits)


def to_prefill_words(words: torch.Tensor, k: int, bits: int) -> torch.Tensor:
    """Canonical int32 words ``[N, ceil(K * bits / 32)]`` -> prefill words int32 ``[Np, Kp / EPW]`` (module
    docstring): input ``EPW*c + p`` of row n in field :func:`field_of` ``(p)`` of word (n, c); padding holds code 0
    (unsigned field ``2**(bits-1)``)."""
    epw = 32 // bits
    n, nw = words.shape
    kp, np_ = -(-k // PAD_K) * PAD_K, -(-n // PAD_N) * PAD_N
    fill = sum((1 << (bits - 1)) << (bits * i) for i in range(epw)) - 2**32  # 0x88888888 / 0x80808080 as int32
    out = torch.full((np_, kp // epw), fill, dtype=torch.int32, device=words.device)
    mask = (1 << bits) - 1
    w = words.to(torch.int64) & 0xFFFFFFFF
    moved = torch.zeros_like(w)
    for p in range(epw):  # field p (canonical) -> field_of(p)
        moved |= ((w >> (bits * p)) & mask) << (bits * field_of(p, bits))
    out[:n, :nw] = torch.where(moved >= 2**31, moved - 2**32, moved).to(torch.int32)
    return out


def _padded_t(t: torch.Tensor, np_: int) -> torch.Tensor:
    """``[N, G]`` -> ``[G, Np]`` contiguous, zero-padded (a group's row of a block is one contiguous load)."""
    out = torch.zeros((t.shape[1], np_), dtype=t.dtype, device=t.device)
    out[:, :t.shape[0]] = t.t()
    return out


def prefill_words(lay: dict, bits: int) -> torch.Tensor:
    """The prefill words of a prepared weight (dsq_cuda.mm_layout.prepare), made at their first use and cached as
    ``lay["pf"]``, with the scales transposed and padded to ``lay["pf_ws"]`` float32 ``[G, Np]`` and the zero
    points to ``lay["pf_wz"]`` int8 ``[G, Np]`` (W4A16_ASYM)."""
    if "pf" not in lay:
        check_not_capturing("prefill layout")
        dev = lay["device"]
        w = to_prefill_words(lay["packed"].to(dev), lay["k"], bits)
        lay["pf_ws"] = _padded_t(lay["ws"].float(), w.shape[0])
        if "wz" in lay:
            lay["pf_wz"] = _padded_t(lay["wz"], w.shape[0])
        lay["pf"] = w
    return lay["pf"]


def _asm_text(pair: int, bits: int, f16: bool) -> str:
    """PTX for pair ``pair`` of a word $2 -> $0, $1: its fields ``pair`` and ``pair + EPW / 2`` as exact 16-bit
    floats; int4 adds the row's offset $3 (``-(B + 8 + z)``)."""
    magic = "0x64006400" if f16 else "0x43004300"
    fma = "fma.rn.f16x2" if f16 else "fma.rn.bf16x2"
    one = "0x3C003C00" if f16 else "0x3F803F80"
    if bits == 4:
        sh = 4 * pair
        shift = f"shr.u32 t, $2, {sh}; " if sh else "mov.b32 t, $2; "
        return (f"{{ .reg .b32 t, c1, c; mov.b32 c1, {one}; mov.b32 c, {{$3, $3}}; {shift}"
                f"lop3.b32 t, t, 0x000F000F, {magic}, 0xEA; {fma} t, t, c1, c; mov.b32 {{$0, $1}}, t; }}")
    sixteen = "0x4C004C00" if f16 else "0x41804180"
    negc = "0xF448F448" if f16 else "0xC510C510"  # -(17 B + 128): -17536 (f16) / -2304 (bf16)
    lo = f"shr.u32 lo, $2, {8 * pair}; " if pair else "mov.b32 lo, $2; "
    return (f"{{ .reg .b32 lo, hi, c16, cneg, c1; mov.b32 c16, {sixteen}; mov.b32 cneg, {negc}; mov.b32 c1, {one}; "
            f"{lo}shr.u32 hi, $2, {8 * pair + 4}; lop3.b32 lo, lo, 0x000F000F, {magic}, 0xEA; "
            f"lop3.b32 hi, hi, 0x000F000F, {magic}, 0xEA; {fma} hi, hi, c16, cneg; {fma} lo, lo, c1, hi; "
            f"mov.b32 {{$0, $1}}, lo; }}")


# the PTX of every code pair, per (bits, 16-bit float type), indexed by pair inside the kernel
_ASM_I4_BF16 = tl.constexpr(tuple(_asm_text(i, 4, False) for i in range(4)))
_ASM_I4_F16 = tl.constexpr(tuple(_asm_text(i, 4, True) for i in range(4)))
_ASM_I8_BF16 = tl.constexpr(tuple(_asm_text(j, 8, False) for j in range(2)))
_ASM_I8_F16 = tl.constexpr(tuple(_asm_text(j, 8, True) for j in range(2)))


@triton.jit
def _pair(words, off, P: tl.constexpr, BITS: tl.constexpr, F16: tl.constexpr, ASM: tl.constexpr):
    """Pair P of every word: ``(lo, hi)``, the exact values ``q - z`` of its fields P and P + EPW / 2 (inputs 2P
    and 2P + 1). ASM: 16-bit floats (``off`` = ``-(B + 8 + z)`` in them, int4); else float32 (``off`` = z)."""
    if ASM:
        if BITS == 4 and F16:
            lo, hi = tl.inline_asm_elementwise(_ASM_I4_F16[P], "=h,=h,r,h", [words, off],
                                               dtype=(tl.float16, tl.float16), is_pure=True, pack=1)
        elif BITS == 4:
            lo, hi = tl.inline_asm_elementwise(_ASM_I4_BF16[P], "=h,=h,r,h", [words, off],
                                               dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
        elif F16:
            lo, hi = tl.inline_asm_elementwise(_ASM_I8_F16[P], "=h,=h,r", [words], dtype=(tl.float16, tl.float16),
                                               is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(_ASM_I8_BF16[P], "=h,=h,r", [words], dtype=(tl.bfloat16, tl.bfloat16),
                                               is_pure=True, pack=1)
    elif BITS == 4:
        lo = (((words >> (4 * P)) & 15) - 8).to(tl.float32) - off
        hi = (((words >> (4 * P + 16)) & 15) - 8).to(tl.float32) - off
    else:
        lo = (((words >> (8 * P)) & 255) - 128).to(tl.float32)
        hi = (((words >> (8 * P + 16)) & 255) - 128).to(tl.float32)
    return lo, hi


@triton.jit
def _decode(words, off, BITS: tl.constexpr, F16: tl.constexpr, ASM: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr):
    """A ``[BN, BK / EPW]`` word tile -> the ``[BN, BK]`` weight tile in input order. Pair s of a word is inputs
    ``2s`` (lo) and ``2s + 1`` (hi); the joins add register dimensions ``[.., d1, d2, h]`` (int4, s = 2 d1 + d2) or
    ``[.., s, h]`` (int8), which the reshape reads as the position ``2s + h`` in the word, so a pair stays the
    two halves of one register."""
    if BITS == 4:
        p0 = _pair(words, off, 0, BITS, F16, ASM)
        p1 = _pair(words, off, 1, BITS, F16, ASM)
        p2 = _pair(words, off, 2, BITS, F16, ASM)
        p3 = _pair(words, off, 3, BITS, F16, ASM)
        q = tl.join(tl.join(tl.join(p0[0], p2[0]), tl.join(p1[0], p3[0])),
                    tl.join(tl.join(p0[1], p2[1]), tl.join(p1[1], p3[1])))
    else:
        p0 = _pair(words, off, 0, BITS, F16, ASM)
        p1 = _pair(words, off, 1, BITS, F16, ASM)
        q = tl.join(tl.join(p0[0], p1[0]), tl.join(p0[1], p1[1]))
    return tl.reshape(q, [BN, BK])


@triton.jit
def _offsets(z, R: tl.constexpr, BN: tl.constexpr, B: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
    """The decode's per-row offsets for int4 zero points ``z`` [BN] (float32), broadcast to the word tile ``[BN, R]``:
    ``-(B + 8 + z)`` in 16-bit floats (ASM; exact: integers of magnitude below 1040) or z itself (float32)."""
    if ASM:
        z = (0.0 - (B + 8.0) - z).to(DT)
    return tl.broadcast_to(z[:, None], [BN, R])


@triton.jit
def _mma(xt, a, acc, SWAP: tl.constexpr, ASM: tl.constexpr):
    """``acc += x_tile @ a^T`` ([BM, BN]; ``a``: the weight tile [BN, BK]), or with SWAP its transpose ``a @
    x_tile^T`` ([BN, BM]: the weights are the MMA's first operand)."""
    if not ASM:
        xt = xt.to(tl.float32)
    if SWAP:
        if ASM:
            acc = tl.dot(a, tl.trans(xt), acc)
        else:
            acc = tl.dot(a, tl.trans(xt), acc, input_precision="ieee")
    elif ASM:
        acc = tl.dot(xt, tl.trans(a), acc)
    else:
        acc = tl.dot(xt, tl.trans(a), acc, input_precision="ieee")
    return acc


@triton.jit
def _per_n(v, SWAP: tl.constexpr):
    """A per-column vector [BN] broadcast against the accumulator ([BM, BN], or [BN, BM] with SWAP)."""
    if SWAP:
        return v[:, None]
    else:
        return v[None, :]


@triton.jit
def prefill_kernel(x_ptr, w_ptr, ws_ptr, wz_ptr, bias_ptr, out_ptr, M, N, K, NP, KW, stride_xm, stride_om,
                   G: tl.constexpr, BITS: tl.constexpr, ASYM: tl.constexpr, GROUP_SCALE: tl.constexpr,
                   HAS_BIAS: tl.constexpr, F16: tl.constexpr, ASM: tl.constexpr, EVEN_K: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                   SWAP: tl.constexpr = False):
    """``out[M, N] = x[M, K] @ W^T`` (module docstring). ``w``: prefill words ``[NP, KW]``; ``ws``: float32 scales
    ``[NG, NP]`` (GROUP_SCALE, groups of G inputs) or ``[1, NP]``; ``wz``: int8 zero points ``[NG, NP]`` (ASYM, int4).
    GROUP_SCALE needs ``BLOCK_K | G`` and ``G | K``; EVEN_K: ``BLOCK_K | K``. SWAP: the accumulator is ``y^T``
    tiles ``[BLOCK_N, BLOCK_M]`` (weights as the MMA's first operand); the same values."""
    EPW: tl.constexpr = 32 // BITS
    R: tl.constexpr = BLOCK_K // EPW  # words of a row in a K tile
    B: tl.constexpr = 1024.0 if F16 else 128.0
    DT: tl.constexpr = tl.float16 if F16 else tl.bfloat16
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    band = pid // (GROUP_M * grid_n)
    rows_in_band = tl.minimum(grid_m - band * GROUP_M, GROUP_M)
    pid_m = band * GROUP_M + (pid % (GROUP_M * grid_n)) % rows_in_band
    pid_n = (pid % (GROUP_M * grid_n)) // rows_in_band
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # < NP: NP is padded to whole blocks
    offs_k = tl.arange(0, BLOCK_K)
    xrow = tl.minimum(offs_m, M - 1)  # rows past M re-read the last row (in bounds, never stored)
    x_ptrs = x_ptr + xrow[:, None].to(tl.int64) * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * KW + tl.arange(0, R)[None, :]
    if SWAP:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    off = _offsets(tl.zeros([BLOCK_N], dtype=tl.float32), R, BLOCK_N, B, DT, ASM)
    if GROUP_SCALE:
        SUB: tl.constexpr = G // BLOCK_K
        for g in range(0, K // G):
            if ASYM:
                off = _offsets(tl.load(wz_ptr + g * NP + offs_n).to(tl.float32), R, BLOCK_N, B, DT, ASM)
            part = tl.zeros_like(acc)
            for s in tl.static_range(SUB):
                kt = g * SUB + s
                xt = tl.load(x_ptrs + kt * BLOCK_K)
                a = _decode(tl.load(w_ptrs + kt * R), off, BITS, F16, ASM, BLOCK_N, BLOCK_K)
                part = _mma(xt, a, part, SWAP, ASM)
            acc += part * _per_n(tl.load(ws_ptr + g * NP + offs_n), SWAP)
    else:
        if ASYM:
            off = _offsets(tl.load(wz_ptr + offs_n).to(tl.float32), R, BLOCK_N, B, DT, ASM)
        for kt in range(0, tl.cdiv(K, BLOCK_K)):
            if EVEN_K:
                xt = tl.load(x_ptrs + kt * BLOCK_K)
            else:  # the layout holds code 0 past K; x is read as 0 there too (and never past its rows)
                xt = tl.load(x_ptrs + kt * BLOCK_K, mask=(kt * BLOCK_K + offs_k)[None, :] < K, other=0.0)
            a = _decode(tl.load(w_ptrs + kt * R), off, BITS, F16, ASM, BLOCK_N, BLOCK_K)
            acc = _mma(xt, a, acc, SWAP, ASM)
        acc = acc * _per_n(tl.load(ws_ptr + offs_n), SWAP)
    nmask = offs_n < N
    if HAS_BIAS:
        acc += _per_n(tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32), SWAP)
    if SWAP:
        optr = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
        tl.store(optr, acc.to(out_ptr.dtype.element_ty), mask=(offs_m[None, :] < M) & nmask[:, None])
    else:
        optr = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
        tl.store(optr, acc.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & nmask[None, :])


def _largest_block(group: int, want: int) -> int:
    """The largest power of two <= want (at least 16) dividing the group (any when per channel)."""
    b = want
    while b > 16 and group and group % b:
        b //= 2
    return b


def pick_prefill(m: int, n: int, k: int, group: int, device: torch.device) -> tuple[int, int, int, int, int, bool]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, swap)`` of :func:`prefill_matmul`.

    From two H200 lab runs (benchmarks/cuda/prefill_lab.py, triton 3.6; 7168x18432, 18432x7168, 2048x7168,
    7168x2048, 1536x24576 at M = 256 and 4096): grouped int4 (W4A16) won with [128, 128] tiles, BLOCK_K = the group
    of 128, 8 warps, 3-4 stages ([64, 128] with 4 warps where [128, 128] tiles fill under half the
    multiprocessors); per-channel int8 (W8A16) with [256, 128, 64], 8 warps, 4 stages, swapped, at M = 4096 (and at
    M = 256 on 2 of 4 shapes), [128, 64, 64] with 4 warps and 4 stages at M = 256. Small tiles in the interpreter."""
    if interpreting() or device.type != "cuda":
        return 16, 32, _largest_block(group, 32), 4, 1, SWAP
    if group:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        if triton.cdiv(m, 128) * triton.cdiv(n, 128) < sms // 2:
            return 64, 128, _largest_block(group, 128), 4, 3, False
        return 128, 128, _largest_block(group, 128), 8, 3, False
    if m >= 1024:
        return 256, 128, 64, 8, 4, True
    return 128, 64, 64, 4, 4, False


def prefill_matmul(x: torch.Tensor, lay: dict, scheme: QuantScheme, bias: torch.Tensor | None = None,
                   config: Config | tuple[int, ...] | None = None) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W^T (+ bias)`` in x's dtype (bf16 / fp16) for a weight-only packed weight, by
    :func:`prefill_kernel`. ``lay``: the weight's device layout (dsq_cuda.mm_layout.prepare; the prefill words
    are added to it at the first call); ``config``: a Config (split_k ignored) or ``(BLOCK_M, BLOCK_N, BLOCK_K,
    num_warps, num_stages[, swap])`` (swap, when not given: :data:`SWAP`), else :func:`pick_prefill`."""
    if not scheme.weight_only or "packed" not in lay or scheme.two_level or \
            (not scheme.weight_symmetric and scheme.weight_bits != 4):  # (zero points are stored as int4)
        raise UnsupportedError(f"prefill_matmul serves weight-only packed schemes (W4A16, W4A16_ASYM, W8A16), not "
                               f"{scheme.name} ({scheme.weight_bits}-bit, symmetric={scheme.weight_symmetric})")
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise QuantInputError(f"prefill_matmul takes bf16 or fp16 x, got {x.dtype}")
    m, k = x.shape
    n, bits, group = lay["n"], scheme.weight_bits, group_of(scheme)
    if k != lay["k"]:
        raise QuantInputError(f"x has K={k} inputs; the weight has K={lay['k']}")
    if group and k % group:
        raise QuantInputError(f"prefill_matmul needs K={k} to be a multiple of the scale group {group}")
    if config is None:
        config = pick_prefill(m, n, k, group, x.device)
    elif isinstance(config, Config):
        config = (config.block_m, config.block_n, config.block_k, config.num_warps, config.num_stages)
    bm, bn, bk, warps, stages = config[:5]
    swap = bool(config[5]) if len(config) > 5 else SWAP
    if bk < 16 or bk & (bk - 1) or PAD_K % bk or (group and group % bk):
        raise QuantInputError(f"config block_k={bk} must be a power of two in [16, {PAD_K}] dividing the scale "
                              f"group {group or '(per channel)'}")
    if bn < 16 or PAD_N % bn or bm < 16:
        raise QuantInputError(f"config block_n={bn} must be a power of two in [16, {PAD_N}] and block_m={bm} at "
                              "least 16")
    if bias is not None and tuple(bias.shape) != (n,):
        raise QuantInputError(f"bias has shape {tuple(bias.shape)}; expected [N] = [{n}]")
    w = prefill_words(lay, bits)
    ws = lay["pf_ws"]
    x = x.contiguous()
    asm = not interpreting()
    # the interpreter's float32 -> bf16 cast truncates: it writes float32 and torch rounds below
    out = torch.empty((m, n), dtype=x.dtype if asm else torch.float32, device=x.device)
    if m == 0:
        return out.to(x.dtype)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    prefill_kernel[grid](
        x, w, ws, lay.get("pf_wz", ws), ws if bias is None else bias.contiguous(), out, m, n, k, w.shape[0],
        w.shape[1], x.stride(0), out.stride(0), G=group, BITS=bits, ASYM="pf_wz" in lay, GROUP_SCALE=bool(group),
        HAS_BIAS=bias is not None, F16=x.dtype == torch.float16, ASM=asm, EVEN_K=k % bk == 0,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=GROUP_M, SWAP=swap, num_warps=warps, num_stages=stages)
    return out if asm else out.to(x.dtype)


def prefill(x: torch.Tensor, packed, scheme: QuantScheme, bias: torch.Tensor | None = None,
            config: Config | tuple[int, ...] | None = None) -> torch.Tensor:
    """:func:`prefill_matmul` on a PackedWeight (its device layout prepared and cached on x's device)."""
    return prefill_matmul(x, prepare(packed, scheme, x.device), scheme, bias, config)
