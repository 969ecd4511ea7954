"""Dequantize a packed weight-only weight to x's float dtype (prefill path: then one cuBLAS GEMM).

``Wd[n, k] = round_to_dtype((q[n, k] - zp[n, g]) * scale[n, g])``: one rounding of each weight to the MMA
input format, which the conformance tolerance of weight-only schemes allows (2 u of the MMA dtype). At large
M the GEMM is compute-bound, the extra pass over the weight (read 0.5-1 byte, write 2 bytes per weight) is a
small fraction of the time, and cuBLAS' bf16 tensor-core GEMM is faster than dequantizing inside our tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _dequant_kernel(w_ptr, ws_ptr, wz_ptr, out_ptr, N, K, NW, NG, G, BITS: tl.constexpr, ASYM: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    m = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    n64 = offs_n[:, None].to(tl.int64)
    words = tl.load(w_ptr + n64 * NW + offs_k[None, :] // EPW, mask=m, other=0)
    u = ((words >> ((offs_k[None, :] % EPW) * BITS)) & ((1 << BITS) - 1)) | 0x4B000000
    q = u.to(tl.float32, bitcast=True) - (8388608.0 + (1 << (BITS - 1)))
    gidx = n64 * NG + offs_k[None, :] // G
    if ASYM:
        q = q - tl.load(wz_ptr + gidx, mask=m, other=0).to(tl.float32)
    s = tl.load(ws_ptr + gidx, mask=m, other=0.0)
    tl.store(out_ptr + n64 * K + offs_k[None, :], (q * s).to(out_ptr.dtype.element_ty), mask=m)


def dequantize(lay: dict, bits: int, group: int, dtype: torch.dtype) -> torch.Tensor:
    """[N, K] weight in ``dtype`` from a prepared device layout (see dsq_cuda.mm.prepare)."""
    n, k, w, ws = lay["n"], lay["k"], lay["w"], lay["ws"]
    out = torch.empty((n, k), dtype=dtype, device=w.device)
    wz = lay.get("wz", ws)
    grid = (triton.cdiv(n, 32), triton.cdiv(k, 256))
    _dequant_kernel[grid](w, ws, wz, out, n, k, w.shape[-1], ws.shape[-1], group or k, BITS=bits,
                          ASYM="wz" in lay, BLOCK_N=32, BLOCK_K=256)
    return out
