"""int8 activation quantization on the device, exact against the dsq rules.

Dynamic per token (W8A8_DYNAMIC, W4A8_DYNAMIC): dsq says ``s = max(amax_row / 127, 2^-126)``,
``q = clip(rint(x / s), -128, 127)`` (float32, ties to even). ``npu_dynamic_quant`` computes the same for
fp16/bf16 inputs (ops-nn golden: fp32 math, torch.round), except that it leaves an all-zero or
denormal-amax row at ``scale = amax / 127 < 2^-126``; those rows are recomputed with the floor scale.
float32 inputs (the op takes fp16/bf16 only) use the same formula as torch ops on the device.

Static per tensor (W8A8): ``q = clip(round(x / s + zp), -128, 127)``, float32, ``round`` per the scheme's
``act_rounding``. ``npu_quantize(div_mode=True)`` rounds half AWAY from zero (CAST_ROUND), so it is used
exactly when ``act_rounding`` is HALF_AWAY; for HALF_EVEN the same float32 formula runs as torch ops with
``torch.round`` (ties to even). vllm-ascend calls ``npu_quantize(x, 1/s, zp, div_mode=False)``, which
multiplies by a rounded reciprocal and can differ from ``x / s`` by one code; dsq divides.
"""

from __future__ import annotations

import torch

from dsq.schemes import RoundMode

F32_TINY = 2.0**-126


def dynamic_int8(x: torch.Tensor, ops) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 codes [M, K] and float32 scales [M] (rows with amax/127 < 2^-126 use 2^-126)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        q, s = ops.npu_dynamic_quant(x)
        low = s < F32_TINY
        if bool(low.any()):
            q_low = torch.round(x[low].to(torch.float32) / F32_TINY).clamp(-128, 127).to(torch.int8)
            q = q.clone()
            q[low] = q_low
            s = torch.where(low, torch.full_like(s, F32_TINY), s)
        return q, s.to(torch.float32)
    xf = x.to(torch.float32)
    s = torch.clamp_min(xf.abs().amax(dim=-1) / 127.0, F32_TINY) if xf.shape[-1] else \
        torch.full(xf.shape[:-1], F32_TINY, dtype=torch.float32, device=x.device)
    q = torch.round(xf / s.unsqueeze(-1)).clamp(-128, 127).to(torch.int8)
    return q, s


def static_int8(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, rounding: RoundMode, ops) -> torch.Tensor:
    """Per-tensor int8 codes with float32 ``scale`` (1,) and zero point ``zp`` (1,) (as float32)."""
    if rounding is RoundMode.HALF_AWAY:
        return ops.npu_quantize(x, scale.reshape(1), zp.reshape(1), torch.qint8, -1, True)
    v = x.to(torch.float32) / scale.reshape(1) + zp.reshape(1).to(torch.float32)
    return torch.round(v).clamp(-128, 127).to(torch.int8)
