"""Activation quantization kernels (importable on their own: the fused-MoE kernels reuse them).

Math (dsq.schemes; float32, correctly rounded division):
    int8 per token:        s = max(amax_row / 127, tiny), q = clip(rint(x / s), -128, 127)
    fp8 per token / group: s = max(amax / 448, tiny),     q = e4m3(clip(x / s, -448, 448))   (group = 128 inputs)
    int8 static per tensor (asymmetric): q = clip(round(x / scale + zp), -128, 127), the sum in float32 and
                           round = half to even or half away from zero (scheme.act_rounding)
``tiny`` is the smallest normal float32. x is float32/bf16/fp16 [M, K]; codes int8 or float8_e4m3fn [M, K];
scales float32 [M, 1], [M, ceil(K/128)] or [1].

Functions:
    quantize_per_token_int8(x), quantize_per_token_fp8(x), quantize_per_group_fp8(x, group=128)
        -> (codes, scales); quantize_swiglu_per_token_int8(h, out_kind) -> the int8 codes of the MoE's SwiGLU;
        quantize_per_token_as_bf16(x, fp8) -> (the same codes as bf16, scales);
    quantize_static_int8(x, scale, zero_point, half_away=False) -> codes;
    quantize_activation(x, scheme, act_qparams) -> dsq.QuantizedActivation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq.errors import QuantInputError
from dsq.qtypes import QuantizedActivation
from dsq.schemes import ActGranularity, QType, QuantScheme, RoundMode
from dsq_cuda import pdl
from dsq_cuda.int4_int8_mma import mma_position
from dsq_cuda.moe_tiles import swiglu_values
from dsq_cuda.numerics import clamp, fp8_code, int_code, rne, round_half_away
from dsq_cuda.pdl import wait_for_inputs

TINY_F32 = float(torch.finfo(torch.float32).tiny)


@triton.jit
def _act_dynamic_kernel(x_ptr, q_ptr, s_ptr, K, GROUP, NG, CHUNK, stride_xm, stride_qm, tiny,
                        FP8: tl.constexpr, BLOCK_K: tl.constexpr, MMA_ORDER: tl.constexpr = False,
                        SWIGLU: tl.constexpr = False, OUT_KIND: tl.constexpr = 0, PDL: tl.constexpr = False):
    """Program (m, g, c): the scale of row m's group g = columns [g*GROUP, min(g*GROUP+GROUP, K)) and the
    codes of chunk c of that group (CHUNK columns). Every chunk's program reads the whole group for its
    amax, so at small M a long row is quantized by many programs at once instead of one (the host picks
    one chunk per group when there are rows enough to fill the GPU). MMA_ORDER: code k is stored at its
    position in dsq_cuda.slab.int8_mma_order (inside its tile of 128; the inverse of
    int4_int8_mma.mma_position_source), so the decode kernel's I8 path needs no separate reordering pass.
    SWIGLU: x is the float32 gate / up output h [M, 2K] of the MoE's first GEMM, and row m's values are the SwiGLU
    of it rounded to the activation dtype (moe_tiles.swiglu_values, OUT_KIND), the values
    moe_decode_kernels.swiglu_kernel would store: one kernel instead of two at decode. PDL: dsq_cuda.pdl."""
    wait_for_inputs(PDL)
    m = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    c = tl.program_id(2)
    k_lo = g * GROUP
    k_hi = tl.minimum(k_lo + GROUP, K)
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        if SWIGLU:
            x = swiglu_values(x_ptr + m * stride_xm, cols, cols < k_hi, K, OUT_KIND)
        else:
            x = tl.load(x_ptr + m * stride_xm + cols, mask=cols < k_hi, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    a = tl.max(amax, axis=0)
    if FP8:
        s = tl.maximum(tl.math.div_rn(a, 448.0), tiny)
    else:
        s = tl.maximum(tl.math.div_rn(a, 127.0), tiny)
    if c == 0:
        tl.store(s_ptr + m * NG + g, s)
    c_lo = k_lo + c * CHUNK
    k_hi = tl.minimum(c_lo + CHUNK, k_hi)
    for k0 in range(c_lo, k_hi, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        msk = cols < k_hi
        if SWIGLU:
            x = swiglu_values(x_ptr + m * stride_xm, cols, msk, K, OUT_KIND)
        else:
            x = tl.load(x_ptr + m * stride_xm + cols, mask=msk, other=0.0).to(tl.float32)
        if FP8:
            q = fp8_code(x, s)
        else:
            q = int_code(x, s, -128.0, 127.0)
        if MMA_ORDER:
            dst = mma_position(cols)
        else:
            dst = cols
        tl.store(q_ptr + m * stride_qm + dst, q.to(q_ptr.dtype.element_ty), mask=msk)


@triton.jit
def _act_group_kernel(x_ptr, q_ptr, s_ptr, M, NG, stride_xm, stride_qm, tiny, FP8: tl.constexpr,
                      GROUP: tl.constexpr, GPB: tl.constexpr, BLOCK_R: tl.constexpr):
    """Program (r, b): rows ``[r*BLOCK_R, +BLOCK_R)`` x groups ``[b*GPB, +GPB)``, as one [BLOCK_R, GPB, GROUP] tile:
    the same values as _act_dynamic_kernel (K a multiple of GROUP, a power of two). At prefill sizes that kernel
    ran one program of GROUP columns per (row, group), 590k programs at M = 4096, K = 18432, and its launches
    cost about half the time of the FP8 GEMM after it on the H200 (cuda.md v12)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    gs = tl.program_id(1) * GPB + tl.arange(0, GPB)
    cols = gs[:, None] * GROUP + tl.arange(0, GROUP)[None, :]  # [GPB, GROUP]
    r64 = rows.to(tl.int64)[:, None, None]
    msk = (rows < M)[:, None, None] & (gs < NG)[None, :, None]
    x = tl.load(x_ptr + r64 * stride_xm + cols[None, :, :], mask=msk, other=0.0).to(tl.float32)
    a = tl.max(tl.abs(x), axis=2)  # [BLOCK_R, GPB]
    if FP8:
        s = tl.maximum(tl.math.div_rn(a, 448.0), tiny)
        q = fp8_code(x, s[:, :, None])
    else:
        s = tl.maximum(tl.math.div_rn(a, 127.0), tiny)
        q = int_code(x, s[:, :, None], -128.0, 127.0)
    tl.store(s_ptr + rows.to(tl.int64)[:, None] * NG + gs[None, :], s, mask=(rows < M)[:, None] & (gs < NG)[None, :])
    tl.store(q_ptr + r64 * stride_qm + cols[None, :, :], q.to(q_ptr.dtype.element_ty), mask=msk)


@triton.jit
def _act_static_kernel(x_ptr, q_ptr, s_ptr, zp_ptr, M, K, stride_xm, HALF_AWAY: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    msk = (rows[:, None] < M) & (cols[None, :] < K)
    r64 = rows[:, None].to(tl.int64)
    x = tl.load(x_ptr + r64 * stride_xm + cols[None, :], mask=msk, other=0.0).to(tl.float32)
    s = tl.load(s_ptr)
    zp = tl.load(zp_ptr).to(tl.float32)
    v = clamp(tl.math.div_rn(x, s) + zp, -128.0, 127.0)
    if HALF_AWAY:
        q = round_half_away(v)
    else:
        q = rne(v)
    tl.store(q_ptr + r64 * K + cols[None, :], q.to(tl.int8), mask=msk)


def _dynamic(x: torch.Tensor, group: int, fp8: bool, codes_dtype: torch.dtype | None = None,
             mma_order: bool = False, swiglu_kind: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``swiglu_kind`` (an OUT_KIND): x is a float32 [M, 2K] gate / up output; quantize its SwiGLU (see
    _act_dynamic_kernel SWIGLU)."""
    m, k = x.shape
    if swiglu_kind is not None:
        k //= 2
    if x.stride(-1) != 1:
        x = x.contiguous()
    ng = -(-k // group)
    dtype = codes_dtype or (torch.float8_e4m3fn if fp8 else torch.int8)
    if mma_order:  # whole tiles of 128, the padding zero
        kp = -(-k // 128) * 128
        q = torch.zeros((m, kp), dtype=dtype, device=x.device) if kp != k else \
            torch.empty((m, kp), dtype=dtype, device=x.device)
    else:
        q = torch.empty((m, k), dtype=dtype, device=x.device)
    s = torch.empty((m, ng), dtype=torch.float32, device=x.device)
    if m and swiglu_kind is None and not mma_order and group < k and k % group == 0 \
            and group == triton.next_power_of_2(group) and group <= 512:
        # many groups a row: whole [rows, groups, GROUP] tiles per program (4096 inputs each)
        gpb = min(triton.next_power_of_2(ng), max(1, 1024 // group))
        grid = (triton.cdiv(m, 4), triton.cdiv(ng, gpb))
        _act_group_kernel[grid](x, q, s, m, ng, x.stride(0), q.stride(0), TINY_F32, FP8=fp8, GROUP=group, GPB=gpb,
                                BLOCK_R=4, num_warps=4)
    elif m:
        block_k = max(16, min(2048, triton.next_power_of_2(group)))
        chunks = _chunks(m * ng, min(group, k), block_k, x.device)
        chunk = -(-min(group, k) // (chunks * block_k)) * block_k
        _act_dynamic_kernel[(m, ng, -(-min(group, k) // chunk))](
            x, q, s, k, group, ng, chunk, x.stride(0), q.stride(0), TINY_F32, FP8=fp8, BLOCK_K=block_k,
            MMA_ORDER=mma_order, SWIGLU=swiglu_kind is not None, OUT_KIND=swiglu_kind or 0, num_warps=4,
            **pdl.launch_args(x.device))
    return q, s


def _chunks(programs: int, group: int, block_k: int, device: torch.device) -> int:
    """Chunks per group for the quantization pass: enough programs for about two per SM, each chunk at
    least BLOCK_K wide; one in the interpreter and when the rows alone fill the GPU. (At M = 1, K = 18432
    one program used to quantize the whole row on one SM.)"""
    if device.type != "cuda":
        return 1
    from dsq_cuda.configs import _sm_count

    want = -(-2 * _sm_count(device.index or 0) // programs)
    return max(1, min(want, -(-group // block_k)))


def quantize_per_token_int8(x: torch.Tensor, mma_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes [M, K] and float32 scales [M, 1]. ``mma_order``: the codes [M, Kp] (K rounded up to 128,
    zero-filled) in dsq_cuda.slab.int8_mma_order, as the decode kernel's int8 path reads them."""
    return _dynamic(x, x.shape[1], fp8=False, mma_order=mma_order)


def quantize_swiglu_per_token_int8(h: torch.Tensor, out_kind: int, mma_order: bool = False
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_per_token_int8 of the SwiGLU of a float32 gate / up output ``h`` [M, 2I], the SwiGLU rounded to
    the activation dtype (``out_kind``: moe_tiles.round_to's OUT_KIND), in one kernel: the same codes and scales as
    moe_decode_kernels.swiglu_kernel followed by quantize_per_token_int8."""
    if h.dtype != torch.float32 or h.ndim != 2 or h.shape[1] % 2:
        raise QuantInputError(f"gate/up output: expected float32 [M, 2I], got {h.dtype} {tuple(h.shape)}")
    return _dynamic(h, h.shape[1] // 2, fp8=False, mma_order=mma_order, swiglu_kind=out_kind)


def quantize_per_token_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn codes [M, K] and float32 scales [M, 1]."""
    return _dynamic(x, x.shape[1], fp8=True)


def quantize_per_token_as_bf16(x: torch.Tensor, fp8: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes of quantize_per_token_fp8 (``fp8``) or quantize_per_token_int8, stored as bfloat16 (exact:
    int8 codes and e4m3 values are bf16 values), and the float32 scales [M, 1]. For tensor-core kernels that
    multiply the codes in bf16: they skip a conversion per element in their inner loop."""
    return _dynamic(x, x.shape[1], fp8=fp8, codes_dtype=torch.bfloat16)


def quantize_per_group_fp8(x: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn codes [M, K] and float32 scales [M, ceil(K/group)]."""
    return _dynamic(x, group, fp8=True)


def quantize_static_int8(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                         half_away: bool = False) -> torch.Tensor:
    """int8 codes [M, K] with one float32 scale and int8 zero point (1-element tensors on x's device)."""
    m, k = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    if m:
        grid = (triton.cdiv(m, 4), triton.cdiv(k, 1024))
        _act_static_kernel[grid](x, q, scale.reshape(1).float(), zero_point.reshape(1), m, k, x.stride(0),
                                 HALF_AWAY=half_away, BLOCK_M=4, BLOCK_K=1024)
    return q


@triton.jit
def _slices_kernel(x_ptr, xs_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, FP8: tl.constexpr, BLOCK_K: tl.constexpr,
                   PDL: tl.constexpr = False):
    """Program m: row m as integers ``X`` (float x: ``X = rne(x * 2**E)`` with the power of two
    ``2**E`` that puts the row's amax in [2**21, 2**22); FP8: e4m3 codes, ``X = 512 x`` exactly) in balanced
    int8 digits ``X = 65536 d0 + 256 d1 + d2`` (d2, d1 in [-128, 127]; |d0| < 64), stored per 128-input tile as
    slices ``[d0, d1, d2]`` of 128 bytes each in int8 MMA order (4 slices a tile, the fourth zero; inputs past K,
    up to the next tile, zero too: q needs no zeroing), and the row's scale ``xs * 2**-E`` (FP8: ``xs[m] / 512``),
    so that ``x = scale * X``. PDL: dsq_cuda.pdl."""
    wait_for_inputs(PDL)
    m = tl.program_id(0).to(tl.int64)
    KP = tl.cdiv(K, 128) * 128
    if FP8:
        e = tl.zeros([], dtype=tl.int32) + 9
        scale = tl.load(xs_ptr + m) * (1.0 / 512.0)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            amax = tl.maximum(amax, tl.abs(tl.load(x_ptr + m * stride_xm + cols, mask=cols < K, other=0.0)
                                           .to(tl.float32)))
        a = tl.max(amax, axis=0)
        # floor(log2(amax)) from the exponent bits; E = 21 - that, at most 126 (amax 0 or subnormal: all zero
        # or tiny, any E in range will do)
        e = tl.minimum(21 - (((a.to(tl.int32, bitcast=True) >> 23) & 255) - 127), 126)
        scale = ((127 - e) << 23).to(tl.float32, bitcast=True)  # 2**-E
    mult = ((127 + e) << 23).to(tl.float32, bitcast=True)  # 2**E
    tl.store(s_ptr + m, scale)
    for k0 in range(0, KP, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        msk = cols < K
        if FP8:
            v = tl.load(x_ptr + m * stride_xm + cols, mask=msk, other=0).to(tl.float8e4nv, bitcast=True)
            v = v.to(tl.float32)
        else:
            v = tl.load(x_ptr + m * stride_xm + cols, mask=msk, other=0.0).to(tl.float32)
        big = rne(v * mult).to(tl.int32)  # exact: a power-of-two scaling, then |X| < 2**22
        d2 = ((big + 128) & 255) - 128
        big = (big - d2) >> 8
        d1 = ((big + 128) & 255) - 128
        d0 = (big - d1) >> 8
        dst = mma_position(cols)
        dst = dst + 3 * (dst - dst % 128)  # tile t starts at 4 * 128 t
        row = q_ptr + m * stride_qm + dst
        inside = cols < KP  # (d0 = d1 = d2 = 0 past K)
        tl.store(row, d0.to(tl.int8), mask=inside)
        tl.store(row + 128, d1.to(tl.int8), mask=inside)
        tl.store(row + 256, d2.to(tl.int8), mask=inside)
        tl.store(row + 384, tl.zeros([BLOCK_K], dtype=tl.int8), mask=inside)


def int8_slices(x: torch.Tensor, fp8_scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x as int8 digit slices for the decode kernel's four-slice int8 path (mma_decode_kernel I8 = 4):
    int8 ``[M, 4 * Kp]`` (Kp = K rounded up to 128; per tile the slices d0, d1, d2 and a zero one, each in
    dsq_cuda.slab.int8_mma_order) and float32 scales [M] with ``x = scale * (65536 d0 + 256 d1 + d2)``.

    Float x (W4A16): every element of at least ``2**-14`` times the row's amax is exact (bf16 has 8
    significant bits); smaller ones are rounded to a multiple of about ``2**-22`` amax, far below float32
    accumulation error. ``fp8_scales`` given: x holds per-token e4m3 codes (float8_e4m3fn, or their uint8
    bits) with those scales [M] / [M, 1] (W4AFP8): every code is a multiple of 2**-9 of at most 448, so the
    slices hold it exactly."""
    m, k = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    kp = -(-k // 128) * 128
    q = torch.empty((m, 4 * kp), dtype=torch.int8, device=x.device)  # (every byte written by the kernel)
    s = torch.empty(m, dtype=torch.float32, device=x.device)
    fp8 = fp8_scales is not None
    if fp8 and x.dtype == torch.float8_e4m3fn:
        x = x.view(torch.uint8)
    xs = fp8_scales.reshape(-1).float().contiguous() if fp8 else s
    if m:
        _slices_kernel[(m,)](x, xs, q, s, k, x.stride(0), q.stride(0), FP8=fp8,
                             BLOCK_K=min(2048, triton.next_power_of_2(k)), num_warps=4, **pdl.launch_args(x.device))
    return q, s


def scheme_int8_slices(x: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """int8_slices of what a scheme multiplies: x itself for weight-only schemes (W4A16), x's per-token e4m3
    codes otherwise (W4AFP8)."""
    return int8_slices(x) if scheme.weight_only else int8_slices(*quantize_per_token_fp8(x))


def static_params(act_qparams, scheme: QuantScheme, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_scale [1] float32, input_zero_point [1] int8; zeros when symmetric) from a PackedWeight/QParams."""
    if act_qparams is None:
        raise QuantInputError(f"scheme {scheme.name} has static activation scales: pass act_qparams "
                              "(the PackedWeight or QParams holding input_scale and input_zero_point)")
    tensors = getattr(act_qparams, "tensors", None)
    get = (lambda n: tensors.get(n)) if isinstance(tensors, dict) else (lambda n: getattr(act_qparams, n, None))
    s, zp = get("input_scale"), get("input_zero_point")
    if zp is None and scheme.act_symmetric and s is not None:
        zp = torch.zeros(1, dtype=torch.int8)
    if s is None or zp is None or s.numel() != 1 or zp.numel() != 1:
        raise QuantInputError(f"act_qparams for {scheme.name} must hold one input_scale and one input_zero_point "
                              f"(got {None if s is None else tuple(s.shape)} and "
                              f"{None if zp is None else tuple(zp.shape)})")
    s = s.reshape(1).to(device=device, dtype=torch.float32)
    if not (torch.isfinite(s).all() and float(s) > 0):
        raise QuantInputError(f"input_scale must be a positive finite float32, got {float(s)}")
    return s, zp.reshape(1).to(device=device, dtype=torch.int8)


def quantize_activation(x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
    """The scheme's activation codes for x [M, K]; ``act_qparams`` only for static (per-tensor) schemes."""
    if scheme.act_dtype is None:
        raise QuantInputError(f"scheme {scheme.name} is weight-only: activations stay in {x.dtype}")
    if scheme.act_granularity is ActGranularity.TENSOR:
        s, zp = static_params(act_qparams, scheme, x.device)
        q = quantize_static_int8(x, s, zp, half_away=scheme.act_rounding is RoundMode.HALF_AWAY)
        return QuantizedActivation(values=q, scale=s, zero_point=None if scheme.act_symmetric else zp)
    fp8 = scheme.act_dtype is QType.FP8_E4M3
    if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
        q, s = quantize_per_group_fp8(x, scheme.act_group_size)
    else:
        q, s = _dynamic(x, x.shape[1], fp8=fp8)
    return QuantizedActivation(values=q, scale=s)
