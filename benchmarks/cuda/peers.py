"""Peer implementations timed beside dsq, each with its own activation quantization where it has one.

bf16        x @ W^T (cuBLAS)
tinygemm    torch.ops.aten._weight_int4pack_mm (W4A16, group 128, bf16 scales and zeros)
int_mm      per-token int8 quantization in torch ops + torch._int_mm (M padded to >= 32) + scale epilogue
scaled_mm   per-token fp8 quantization in torch ops + torch._scaled_mm rowwise (M padded to a multiple of 16)
"""

from __future__ import annotations

import torch


def bf16_fn(x: torch.Tensor, w: torch.Tensor):
    return lambda: x @ w.t()


def tinygemm_fn(x: torch.Tensor, n: int, k: int, group: int = 128):
    """None when this torch has no int4 tinygemm for CUDA."""
    try:
        codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device=x.device)
        u8 = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(u8, 8)
        sz = torch.randn(k // group, n, 2, device=x.device, dtype=torch.bfloat16) * 0.01
        fn = lambda: torch.ops.aten._weight_int4pack_mm(x, packed, group, sz)  # noqa: E731
        fn()
        return fn
    except Exception as exc:  # noqa: BLE001 - report and skip the peer
        print(f"tinygemm unavailable: {type(exc).__name__}: {exc}")
        return None


def _pad_rows(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    m = x.shape[0]
    target = max(minimum, -(-m // multiple) * multiple)
    if target == m:
        return x
    return torch.cat([x, x.new_zeros(target - m, x.shape[1])])


def int_mm_fn(x: torch.Tensor, w_int8: torch.Tensor, w_scale: torch.Tensor):
    wt = w_int8.t()

    def run():
        xp = _pad_rows(x, 8, 32)
        s = xp.abs().amax(dim=1, keepdim=True).float().div(127.0).clamp_min(1e-30)
        q = torch.round(xp.float() / s).clamp(-128, 127).to(torch.int8)
        acc = torch._int_mm(q, wt)
        return (acc.float() * s * w_scale).to(x.dtype)[: x.shape[0]]

    return run


def scaled_mm_fn(x: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor):
    wt = w_fp8.t()
    sb = w_scale.reshape(1, -1).float()

    def run():
        xp = _pad_rows(x, 16)
        s = xp.abs().amax(dim=1, keepdim=True).float().div(448.0).clamp_min(1e-30)
        q = (xp.float() / s).clamp(-448, 448).to(torch.float8_e4m3fn)
        return torch._scaled_mm(q, wt, scale_a=s, scale_b=sb, out_dtype=x.dtype)[: x.shape[0]]

    return run
