"""Quantize the fused-MoE prefill's activations once, before a grouped GEMM, instead of on every load.

The tiled MoE kernel (moe_kernels.py) can quantize its A tile as it loads it (A_KIND 2: dynamic, from the amax
the gate_up epilogue gathered; A_KIND 3: static, with the expert's input scale and zero point). That saves a
pass at decode, but a prefill program re-quantizes the same rows once per N block: each element 56 times in the
down GEMM at H = 7168 (BLOCK_N 128) and, for static schemes, 32 times in gate_up at I = 2048 (BLOCK_N 64), each
time with a correctly rounded division. On the H200 the W8A8 layer ran at 0.27x the bf16 fused layer at T = 4096
(cuda-moe.md). Here each row is quantized once, with the same formulas (bit-identical codes), and the GEMM
reads int8 / e4m3 codes (A_KIND 1 with the scales below, or A_KIND 4: static codes):

    dynamic  s[r, g] = max(amax[r, g] / D, tiny)   (D = 127 int8, 448 e4m3; float32, correctly rounded: torch's
             division by a constant on the GPU is not, which changed codes on the H200, so the kernel computes s)
             q = clip(rint(a / s), -128, 127)  or  e4m3(clip(a / s, -448, 448))
    static   q = clip(round(a / s_e + zp_e), -128, 127), s_e / zp_e of the row's expert (its M block's),
             round half to even or half away from zero (the scheme's act_rounding)

Rows are the padded positions of the expert-sorted pair list (moe_align). With ``gather`` the source row of
position p is the token ``sorted_ids[p] // top_k`` (gate_up's x); otherwise p itself (the intermediate).
Padding positions, and blocks without an expert, get code 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq_cuda import pdl
from dsq_cuda.moe_tiles import swiglu_values
from dsq_cuda.numerics import clamp, fp8_code, int_code, rne, round_half_away
from dsq_cuda.pdl import wait_for_inputs

STATIC, DYNAMIC = 0, 1


@triton.jit
def _requant_kernel(src_ptr, stride_src, ids_ptr, bexp_ptr, s_ptr, zp_ptr, amax_ptr, stride_amax, scale_ptr,
                    q_ptr, stride_q, R, K, top_k, num_pairs, tiny, MODE: tl.constexpr, GATHER: tl.constexpr,
                    FP8: tl.constexpr, HALF_AWAY: tl.constexpr, GROUP: tl.constexpr, BM: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, CENTER: tl.constexpr = False,
                    IDENT: tl.constexpr = False, PDL: tl.constexpr = False, SWIGLU: tl.constexpr = False,
                    OUT_KIND: tl.constexpr = 0):
    wait_for_inputs(PDL)  # (dsq_cuda.pdl)
    pos = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    inside = pos < R
    if IDENT:  # position p is pair p
        pair = tl.where(inside, pos, num_pairs)
    else:
        pair = tl.load(ids_ptr + pos, mask=inside, other=num_pairs)
    e = tl.load(bexp_ptr + pos // BM, mask=inside, other=-1)
    live = inside & (pair < num_pairs) & (e >= 0)
    if GATHER:
        src_rows = tl.where(live, pair // top_k, 0)
    else:
        src_rows = tl.where(live, pos, 0)
    cmask = cols < K
    m = live[:, None] & cmask[None, :]
    if SWIGLU:  # src rows are float32 gate / up outputs [2K]: their SwiGLU, rounded as swiglu_kernel stores it
        a = swiglu_values(src_ptr + src_rows.to(tl.int64)[:, None] * stride_src, cols[None, :], m, K, OUT_KIND)
    else:
        a = tl.load(src_ptr + src_rows.to(tl.int64)[:, None] * stride_src + cols[None, :], mask=m, other=0.0)
        a = a.to(tl.float32)
    if MODE == 0:
        e_ok = tl.maximum(e, 0)
        s = tl.load(s_ptr + e_ok, mask=live, other=1.0)
        zp = tl.load(zp_ptr + e_ok, mask=live, other=0).to(tl.float32)
        v = clamp(tl.math.div_rn(a, s[:, None]) + zp[:, None], -128.0, 127.0)
        if HALF_AWAY:
            q = round_half_away(v)
        else:
            q = rne(v)
        if CENTER:
            q = q - zp[:, None]
    else:
        # the scale from the amax exactly as the GEMM's on-load path computes it (moe_tiles.load_a)
        if GROUP > 0:
            g = cols // GROUP
        else:
            g = cols * 0
        amax = tl.load(amax_ptr + pos.to(tl.int64)[:, None] * stride_amax + g[None, :], mask=m, other=0.0)
        if FP8:
            s = tl.maximum(tl.math.div_rn(amax, 448.0), tiny)
            q = fp8_code(a, s)
        else:
            s = tl.maximum(tl.math.div_rn(amax, 127.0), tiny)
            q = int_code(a, s, -128.0, 127.0)
        # each (row, group) scale once: by the column that starts its group (column 0 when per row)
        first = (cols % GROUP == 0) if GROUP > 0 else (cols == 0)
        tl.store(scale_ptr + pos.to(tl.int64)[:, None] * stride_amax + g[None, :], s,
                 mask=inside[:, None] & cmask[None, :] & first[None, :])
    q = tl.where(m, q, 0.0)
    if CENTER:
        out = q.to(q_ptr.dtype.element_ty)
    elif FP8:
        out = q.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    else:
        out = q.to(tl.int8)
    tl.store(q_ptr + pos.to(tl.int64)[:, None] * stride_q + cols[None, :], out, mask=inside[:, None] & cmask[None, :])


def requantize(src: torch.Tensor, rows: int, sorted_ids: torch.Tensor | None, block_expert: torch.Tensor, block_m: int,
               num_pairs: int, top_k: int, tiny: float, *, gather: bool,
               static: tuple[torch.Tensor, torch.Tensor] | None = None, amax: torch.Tensor | None = None,
               group: int = 0, fp8: bool = False, half_away: bool = False,
               centered: bool = False, swiglu_kind: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes ``[rows, K]`` (int8, or e4m3 bits as uint8 with ``fp8``) of ``src`` rows per padded position, and
    for dynamic quantization their float32 scales (shaped like ``amax``: [rows, G], G = 1 or K / ``group``):
    static with ``static`` = (scale [E] float32, zero point [E] int8) per expert, else from ``amax``.
    ``sorted_ids=None``: position p is pair p. ``centered`` (static only): ``q - zp`` as bfloat16 (exact: at most
    255 in magnitude), for kernels that multiply codes in float (dsq_cuda.moe_gemv). ``swiglu_kind`` (an OUT_KIND):
    src is float32 gate / up outputs ``[R, 2K]`` and what is quantized is their SwiGLU rounded to that dtype (the
    values moe_decode_kernels.swiglu_kernel stores), with no SwiGLU kernel before this one."""
    k = src.shape[1] // 2 if swiglu_kind is not None else src.shape[1]
    dtype = torch.bfloat16 if centered else torch.uint8 if fp8 else torch.int8
    q = torch.empty((rows, k), dtype=dtype, device=src.device)
    scales = None if amax is None else torch.empty_like(amax)
    if rows == 0:
        return q, scales
    if centered and static is None:
        raise ValueError("requantize: centered codes need static scales")
    s, zp = static if static is not None else (block_expert, block_expert)
    am = amax if amax is not None else src
    grid = (triton.cdiv(rows, 16), triton.cdiv(k, 256))
    _requant_kernel[grid](src, src.stride(0), block_expert if sorted_ids is None else sorted_ids, block_expert, s,
                          zp, am, am.stride(0), scales if scales is not None else src, q, q.stride(0), rows, k, top_k,
                          num_pairs, tiny, MODE=STATIC if static is not None else DYNAMIC, GATHER=gather, FP8=fp8,
                          HALF_AWAY=half_away, GROUP=group, BM=block_m, BLOCK_R=16, BLOCK_K=256,
                          CENTER=centered, IDENT=sorted_ids is None, SWIGLU=swiglu_kind is not None,
                          OUT_KIND=swiglu_kind or 0, num_warps=4, **pdl.launch_args(src.device))
    return q, scales


def split_halves(codes: torch.Tensor, block_k: int) -> torch.Tensor:
    """int8 codes ``[R, K]`` -> ``[R, Kp]`` (Kp = K rounded up to ``block_k``, zero-filled), reordered inside
    every ``block_k`` columns so that the even inputs come first, then the odd ones:

        out[r, k0 + j] = codes[r, k0 + 2j],   out[r, k0 + block_k/2 + j] = codes[r, k0 + 2j + 1]

    That is the order in which one byte of canonical int4 weight words holds two codes (low field input 2j,
    high field 2j + 1), so the W4A8 grouped GEMM (moe_tiles.int4_split_step) multiplies each byte's two fields
    against two contiguous activation tiles, without interleaving the weight codes in registers.
    """
    r, k = codes.shape
    kp = -(-k // block_k) * block_k
    if kp != k:
        codes = torch.nn.functional.pad(codes, (0, kp - k))
    return codes.reshape(r, kp // block_k, block_k // 2, 2).transpose(2, 3).reshape(r, kp)
