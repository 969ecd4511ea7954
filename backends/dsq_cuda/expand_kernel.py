"""Expand packed int4 codes to one byte per weight, row-major ``[N, K]``, for the prefill GEMMs of W4A8_DYNAMIC
and W4AFP8 (dsq_cuda.mm): at large M a GEMM on one-byte weights is compute-bound, so a pass that rebuilds them
(read 0.5 byte, write 1 byte per weight) costs a few percent, and the GEMM then runs on the int8 / FP8 tensor
cores at their full rate instead of unpacking nibbles in its inner loop.

Both outputs are exact, so the GEMM that follows computes the scheme's integer / FP8 products unchanged:

    INT8 (two-level W4A8)  out[n, k] = q[n, k] * s2[n, k // G]      int8: the scheme keeps q in [-7, 7] and s2 in
                                                                     1..17, so |q * s2| <= 119 (dsq.schemes)
    FP8  (W4AFP8)          out[n, k] = e4m3(q[n, k])                 bits of float8_e4m3fn: every integer in
                                                                     [-8, 7] is an e4m3 value

The input is the slab layout of dsq_cuda.slab (``[ceil(K/LBK) * SL, N]`` int32, N contiguous): word s of tile t
holds in bit field j the code of input ``t*LBK + j*SL + s``. A program expands one ``[SL, BLOCK_N]`` word tile:
field j gives the ``[BLOCK_N, SL]`` bytes ``out[n, t*LBK + j*SL + (0..SL-1)]`` (SL = 32 or 16 contiguous bytes a
row, whole 32-byte sectors at SL = 32). The output is a temporary of the call (N * K bytes), never cached: a
cached copy would double the weight's memory, which is what 4-bit weights exist to save.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq_cuda.dequant_kernel import slab_tile

#: what the expanded bytes hold
INT8_TWO_LEVEL, FP8_CODES = 0, 1


@triton.jit
def _expand_kernel(w_ptr, s2_ptr, out_ptr, N, K, NG, G, MODE: tl.constexpr, SL: tl.constexpr,
                   BLOCK_N: tl.constexpr):
    EPW: tl.constexpr = 8  # int4 fields per word
    t, offs_n, offs_s, nmask, words = slab_tile(w_ptr, N, SL, BLOCK_N)
    words = tl.trans(words)  # [BLOCK_N, SL]: rows of the output, its contiguous bytes last
    rows = offs_n[:, None].to(tl.int64) * K
    for j in tl.static_range(EPW):
        k0 = t * SL * EPW + j * SL
        ks = k0 + offs_s
        q = ((words >> (4 * j)) & 15) - 8  # int32 in [-8, 7]
        if MODE == 0:
            g = tl.minimum(k0 // G, NG - 1)  # slabs past K (never stored) stay in bounds
            s2 = tl.load(s2_ptr + offs_n * NG + g, mask=nmask, other=0).to(tl.int32)
            v = (q * s2[:, None]).to(tl.int8)
        else:
            v = q.to(tl.float32).to(tl.float8e4nv).to(tl.uint8, bitcast=True)
        tl.store(out_ptr + rows + ks[None, :], v, mask=nmask[:, None] & (ks[None, :] < K))


def expand_int4(slabs: torch.Tensor, n: int, k: int, sl: int, mode: int, s2: torch.Tensor | None = None,
                group: int = 0) -> torch.Tensor:
    """Slab words of an int4 weight -> ``[N, K]`` bytes: int8 ``q * s2`` (INT8_TWO_LEVEL; ``s2`` int8 [N, G]
    with ``group`` inputs a group) or float8_e4m3fn ``q`` (FP8_CODES)."""
    if mode == INT8_TWO_LEVEL and (s2 is None or not group):
        raise ValueError("expand_int4: INT8_TWO_LEVEL needs the level-2 scales s2 [N, G] and their group size")
    out = torch.empty((n, k), dtype=torch.int8 if mode == INT8_TWO_LEVEL else torch.uint8, device=slabs.device)
    grid = (slabs.shape[0] // sl, triton.cdiv(n, 64))
    _expand_kernel[grid](slabs, s2 if s2 is not None else slabs, out, n, k, 1 if s2 is None else s2.shape[-1],
                         group or k, MODE=mode, SL=sl, BLOCK_N=64)
    return out if mode == INT8_TWO_LEVEL else out.view(torch.float8_e4m3fn)
