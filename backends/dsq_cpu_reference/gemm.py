"""Reference matmul and MoE: exact float64 arithmetic on the quantized operands, one final rounding.

matmul: y = dequant(x_q) @ dequant(W)^T + bias, where dequant gives exact float64 values (weight-only schemes
use x itself). Every scheme reduces to this one formula because dequantization is exact in float64; the
scales are folded in before the product, which equals applying them in an epilogue up to float64 rounding
(~1e-16 relative). The result is rounded once to the activation dtype by the caller.

moe (DeepSeek routed experts): for every (token t, slot j) with expert e = topk_ids[t, j] in range,
    h = matmul(x[t], gate_up[e])          rounded to x.dtype     [2I]
    a = silu(h[:I]) * h[I:]               float32, rounded to x.dtype
    o = matmul(a, down[e])                rounded to x.dtype     [H]   (a is quantized per the scheme)
    y[t] += topk_weights[t, j] * o        accumulated in float64, rounded to x.dtype at the end.
"""

from __future__ import annotations

import numpy as np


def exact_matmul(x_deq: np.ndarray, w_deq: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """float64 [M, K] @ [N, K]^T (+ bias [N]) -> float64 [M, N]."""
    y = x_deq @ w_deq.T
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y


def silu_mul(h: np.ndarray) -> np.ndarray:
    """SwiGLU on float32 [T, 2I]: silu(gate) * up with gate = first half, up = second half (float32)."""
    i = h.shape[-1] // 2
    g, u = h[:, :i].astype(np.float32), h[:, i:].astype(np.float32)
    with np.errstate(over="ignore"):  # exp overflow for very negative g gives silu -> -0, which is right
        return (g / (np.float32(1) + np.exp(-g)) * u).astype(np.float32)
