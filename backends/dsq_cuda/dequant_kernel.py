"""Dequantize a packed weight-only weight to x's float dtype (prefill path: then one cuBLAS GEMM).

``Wt[k, n] = round_to_dtype((q[n, k] - zp[n, g]) * scale[n, g])``: one rounding of each weight to the MMA
input format, which the conformance tolerance of weight-only schemes allows (2 u of the MMA dtype). At large
M the GEMM is compute-bound, the extra pass over the weight (read 0.5-1 byte, write 2 bytes per weight) is a
small fraction of the time, and cuBLAS' bf16 tensor-core GEMM is faster than dequantizing inside our tiles.

The weight comes in the slab layout of dsq_cuda.slab (``[K/LBK * SL, N]`` words, N contiguous), so the
output is written transposed, ``[K, N]`` with N contiguous: every load and store is coalesced along N, and a
program writes EPW slabs of ``[SL, BLOCK_N]`` from one word tile. ``x @ Wt`` is the product.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def slab_tile(w_ptr, N, SL: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's ``[SL, BLOCK_N]`` word tile of a slab-layout weight: tile ``program_id(0)`` along K, columns
    ``program_id(1) * BLOCK_N + [0, BLOCK_N)``. Returns (t, offs_n, offs_s, nmask, words); columns past N read 0."""
    t = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, SL)
    nmask = offs_n < N
    words = tl.load(w_ptr + (t * SL + offs_s)[:, None].to(tl.int64) * N + offs_n[None, :], mask=nmask[None, :],
                    other=0)
    return t, offs_n, offs_s, nmask, words


@triton.jit
def _dequant_kernel(w_ptr, ws_ptr, wz_ptr, out_ptr, N, K, NG, G, BITS: tl.constexpr, ASYM: tl.constexpr,
                    GROUP_SCALE: tl.constexpr, SL: tl.constexpr, BLOCK_N: tl.constexpr):
    EPW: tl.constexpr = 32 // BITS
    t, offs_n, offs_s, nmask, words = slab_tile(w_ptr, N, SL, BLOCK_N)
    for j in tl.static_range(EPW):
        ks = t * SL * EPW + j * SL + offs_s
        q = (((words >> (j * BITS)) & ((1 << BITS) - 1)) | 0x4B000000).to(tl.float32, bitcast=True) \
            - (8388608.0 + (1 << (BITS - 1)))
        g = tl.minimum((t * SL * EPW + j * SL) // G, NG - 1)  # slabs past K (never stored) stay in bounds
        if ASYM:
            q = q - tl.load(wz_ptr + offs_n * NG + g, mask=nmask, other=0).to(tl.float32)[None, :]
        if GROUP_SCALE:
            s = tl.load(ws_ptr + offs_n * NG + g, mask=nmask, other=0.0)
        else:
            s = tl.load(ws_ptr + offs_n, mask=nmask, other=0.0)
        tl.store(out_ptr + ks[:, None].to(tl.int64) * N + offs_n[None, :], (q * s[None, :]).to(out_ptr.dtype.element_ty),
                 mask=(ks[:, None] < K) & nmask[None, :])


def dequantize_t(lay: dict, bits: int, group: int, dtype: torch.dtype) -> torch.Tensor:
    """Transposed dequantized weight ``[K, N]`` in ``dtype`` from a prepared device layout (dsq_cuda.mm)."""
    n, k, w, ws, sl = lay["n"], lay["k"], lay["w"], lay["ws"], lay["sl"]
    out = torch.empty((k, n), dtype=dtype, device=w.device)
    wz = lay.get("wz", ws)
    grid = (w.shape[0] // sl, triton.cdiv(n, 128))
    _dequant_kernel[grid](w, ws, wz, out, n, k, ws.shape[-1], group or k, BITS=bits, ASYM="wz" in lay,
                          GROUP_SCALE=bool(group), SL=sl, BLOCK_N=128)
    return out
