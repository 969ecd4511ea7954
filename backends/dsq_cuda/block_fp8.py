"""cuBLAS's block-scaled FP8 GEMM (``torch._scaled_mm`` with 1x128 / 128x128 scales: CUDA >= 12.9, sm_90) for the
prefill of FP8_BLOCK and W4AFP8 (dsq_cuda.mm).

Both schemes are FP8 products with float32 scales that are constant over blocks of 128 inputs, which is what
cuBLAS's block scaling computes: for a [M, K] x [K, N] product with K cut into groups g of 128,

    y[m, n] = sum_g  a_scale[m, g] * b_scale[g, n or n // 128] * sum_{k in g} a[m, k] * b[k, n]

with FP8 products accumulated in float32 inside each group and the scaled group sums added in float32.

    FP8_BLOCK  a = x codes (e4m3), a_scale = x's per-(token, group) scales     (1 x 128 blocks; block_scaled_mm)
               b = W^T codes (e4m3), b_scale = W's per-(128 x 128) scales       (128 x 128 blocks)
    W4AFP8     a = x codes (e4m3), a_scale = x's per-token scale, repeated for every group (1 x 128; w4afp8_mm)
               b = W^T with the int4 codes as e4m3 (exact, dsq_cuda.expand_kernel), b_scale = W's
               per-(row, group) scales                                          (1 x 128 blocks)

These are the schemes' own formulas (the reference's, up to float32 accumulation order), so the path passes the
same conformance tolerance as the Triton kernels. cuBLAS wants 1 x 128 scales stored outer-dimension-major
(column-major ``[rows, groups]``); 128 x 128 scales are the transposed view of W's ``[N/128, K/128]``.

Where cuBLAS cannot do it (no GPU, another architecture, an older CUDA or torch, or shapes that are not
multiples of 128) :func:`available` says no and dsq_cuda.mm keeps its Triton kernels. The check runs once per
device on a small product compared against the same formula in float32 (:func:`emulate`), so a library that
accepts the call but computes something else is not used either.
"""

from __future__ import annotations

import functools

import torch

from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme
from dsq_cuda._env import interpreting

F8 = torch.float8_e4m3fn
GROUP = 128


def emulate(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor) -> torch.Tensor:
    """The block-scaled product in float32, any device: ``a`` [M, K] e4m3, ``a_scale`` [M, K/128], ``b`` [K, N]
    e4m3, ``b_scale`` [K/128, N] (1 x 128 blocks of b's columns) or [K/128, N/128] (128 x 128 blocks)."""
    m, k = a.shape
    n = b.shape[1]
    if k % GROUP:
        raise ValueError(f"emulate: K = {k} is not a multiple of {GROUP}")
    sa = a_scale.float().repeat_interleave(GROUP, dim=1)
    sb = b_scale.float()
    if sb.shape[1] != n:
        sb = sb.repeat_interleave(GROUP, dim=1)[:, :n]
    sb = sb.repeat_interleave(GROUP, dim=0)
    # the scales are constant over each group, so scaling before the product is the same sum
    return (a.float() * sa) @ (b.float() * sb)


def _call(a, a_scale, b, b_scale, out_dtype):
    return torch._scaled_mm(a, b, scale_a=a_scale, scale_b=b_scale, out_dtype=out_dtype)


def outer_major(s: torch.Tensor) -> torch.Tensor:
    """``[rows, groups]`` float32 scales stored column-major (the layout cuBLAS reads for 1 x 128 blocks)."""
    return s.float().t().contiguous().t()


def _round4(v: int) -> int:
    return -(-v // 4) * 4


def block_scaled_mm(a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """``y [M, N] = a @ w^T`` block-scaled: ``a`` [M, K] e4m3 with ``a_scale`` [M, K/128] (1 x 128 blocks),
    ``w`` [N, K] e4m3 with ``w_scale`` [N, K/128] (1 x 128 blocks of its rows) or [N/128, K/128] (128 x 128).

    Rows of ``a`` are padded to a multiple of 4 (zeros, sliced off). 128 x 128 scales are read as the transposed
    ``[K/128, N/128]`` view; cuBLAS's docs ask for K/128 padded to a multiple of 4, which torch 2.11 refuses
    ("Invalid scaling configuration") and unpadded it gave wrong values at K/128 = 3 on the H200, so
    :func:`serves` takes K in multiples of 512 only (every DeepSeek-V3 shape is). With a bias, cuBLAS returns
    float32 and the bias is added before the one rounding to ``out_dtype`` (the reference rounds once, after
    the bias)."""
    m, k = a.shape
    n, groups = w.shape[0], k // GROUP
    if m % 4:
        a = torch.cat([a, a.new_zeros(_round4(m) - m, k)])
        a_scale = torch.cat([a_scale, a_scale.new_ones(_round4(m) - m, groups)])
    # 1 x 128: [K/128, N], N contiguous; 128 x 128: W's [N/128, K/128] read transposed
    b_scale = w_scale.float().t().contiguous() if w_scale.shape[0] == n else w_scale.float().t()
    out = out_dtype if bias is None else torch.float32
    y = _call(a, outer_major(a_scale), w.t(), b_scale, out)[:m]
    return y if bias is None else (y + bias.float()).to(out_dtype)


@functools.lru_cache(maxsize=8)
def _probe(device: str) -> str:
    """Empty when cuBLAS's block-scaled FP8 GEMM runs on ``device`` and :func:`block_scaled_mm` matches
    :func:`emulate` with both block shapes (at M = 62: rows padded); else why not."""
    dev = torch.device(device)
    if dev.type != "cuda" or interpreting():
        return "not a CUDA device"
    cap = torch.cuda.get_device_capability(dev)
    if cap != (9, 0):
        return f"cuBLAS block scaling is used on sm_90 only (this device: sm_{cap[0]}{cap[1]})"
    gen = torch.Generator(device=dev).manual_seed(0)
    m, n, k = 62, 256, 512
    a = (torch.randn(m, k, device=dev, generator=gen) * 8).to(F8)
    w = (torch.randn(n, k, device=dev, generator=gen) * 8).to(F8)
    sa = torch.rand(m, k // GROUP, device=dev, generator=gen) + 0.5
    for ws in (torch.rand(n, k // GROUP, device=dev, generator=gen) + 0.5,  # 1 x 128 blocks of W's rows
               torch.rand(n // GROUP, k // GROUP, device=dev, generator=gen) + 0.5):  # 128 x 128
        try:
            y = block_scaled_mm(a, sa, w, ws, None, torch.float32)
        except (RuntimeError, TypeError, ValueError) as exc:  # this torch / cuBLAS cannot do it
            return f"torch._scaled_mm with block scales failed: {type(exc).__name__}: {str(exc)[:200]}"
        ref = emulate(a, sa, w.t(), ws.t())
        err = ((y - ref).norm() / ref.norm()).item()
        # Hopper's FP8 MMA adds products with fewer mantissa bits than float32 inside a group (the H200 gave a
        # relative error of 1.3e-4 here; the conformance tolerance of FP8 schemes allows 2**-8 of sum |x w|); a
        # wrong layout or scale is off by O(1)
        if not err < 1e-3:
            kind = "1 x 128" if ws.shape[0] == n else "128 x 128"
            return f"torch._scaled_mm with {kind} block scales differs from the formula (relative error {err:.3g})"
    return ""


def available(device: torch.device | str) -> bool:
    """Whether cuBLAS's block-scaled FP8 GEMM serves ``device`` (checked once per device, never inside CUDA
    graph capture: an unchecked device during capture counts as unavailable)."""
    dev = str(torch.device(device))
    if torch.device(dev).type == "cuda" and torch.cuda.is_current_stream_capturing() and \
            _probe.cache_info().currsize == 0:
        return False
    return _probe(dev) == ""


def why_unavailable(device: torch.device | str) -> str:
    return _probe(str(torch.device(device)))


def serves(scheme: QuantScheme, n: int, k: int, device: torch.device | str) -> bool:
    """Whether this path computes ``scheme`` on an [N, K] weight on ``device``: FP8_BLOCK with 128 x 128 weight
    blocks and 128-input activation groups, or W4AFP8 with 128-input groups; N whole 128-blocks and K whole
    512-blocks (:func:`block_scaled_mm` says why); :func:`available` on the device."""
    if scheme.weight_granularity is Granularity.BLOCK:
        fits = tuple(scheme.block_size) == (GROUP, GROUP) and scheme.act_granularity is ActGranularity.TOKEN_GROUP \
            and scheme.act_group_size == GROUP
    else:
        fits = scheme.weight_granularity is Granularity.GROUP and scheme.group_size == GROUP and \
            scheme.act_granularity is ActGranularity.TOKEN and scheme.weight_bits == 4 and scheme.weight_symmetric
    return fits and scheme.act_dtype is QType.FP8_E4M3 and n % GROUP == 0 and k % (4 * GROUP) == 0 and available(device)


def w4afp8_mm(xq: torch.Tensor, xs: torch.Tensor, w_codes: torch.Tensor, ws: torch.Tensor,
              bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """W4AFP8: x codes [M, K] e4m3 with per-token scales [M] or [M, 1] (the same for each of its groups), the
    int4 codes as e4m3 [N, K] with per-(row, group) scales [N, K/128]."""
    m, k = xq.shape
    return block_scaled_mm(xq, xs.reshape(m, 1).expand(m, k // GROUP), w_codes, ws, bias, out_dtype)
