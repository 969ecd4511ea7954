"""Canonical PackedWeight -> the device tensors each torch_npu op consumes (vllm-ascend's load-time steps).

Per scheme (weights [..., N, K] become [..., K, N], as every op here multiplies ``x @ w``):
    W8A16            int8 (K, N) FRACTAL_NZ; antiquant scale (N,)
    W4A16(_ASYM)     int4 values (K, Np) -> npu_convert_weight_to_int4pack -> int32 (K, Np/8), Np = N rounded up
                     to 8 (zero columns); antiquant scale (G, Np) or (Np,) when one group spans K; offset = -zp
                     (the op ADDS its offset, dsq subtracts its zero point)
    W8A8 (static)    int8 (K, N) NZ; deq_scale = input_scale * weight_scale (fp32, (N,));
                     quant_bias = -input_zp * sum_k q[n, k] (int32, exact), so (acc + quant_bias) * deq_scale
                     = (x_q - zp) @ q^T * s_x * s_w
    W8A8_DYNAMIC     int8 (K, N) NZ; weight_scale fp32 (N,)
    W4A8_DYNAMIC     int8 (K, N) NZ holding q4 * s2 (exact: |q4 * s2| <= 119); weight_scale = s1 fp32 (N,)
Stacked MoE weights keep their leading expert dim. Results are cached in ``packed.device_layout``.
"""

from __future__ import annotations

import torch

from dsq.qtypes import PackedWeight
from dsq.schemes import QType, QuantScheme

from . import canonical, runtime

NZ = 29


def _group_size(scheme: QuantScheme, k: int) -> int:
    """Group size of the antiquant scale, or 0 when one scale per channel covers all of K."""
    if scheme.weight_dtype is QType.INT4 and not scheme.two_level and -(-k // scheme.group_size) > 1:
        return scheme.group_size
    return 0


def _kn(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(-1, -2).contiguous()


def prepare(packed: PackedWeight, scheme: QuantScheme, ops, device: str) -> dict:
    """Device tensors for ``packed`` under the current ops (cached per mode in packed.device_layout)."""
    key = f"ascend:{runtime.mode()}"
    cached = packed.device_layout.get(key)
    if cached is not None:
        return cached
    codes, qp = canonical.codes_and_params(packed, scheme)
    n, k = packed.shape[-2:]
    s = qp["weight_scale"]  # fp32 [..., N, G] or [..., N, 1]
    out: dict = {"n": n, "k": k}
    if scheme.weight_only:
        out.update(_weight_only(codes, qp, scheme, ops, device, n, k))
    else:
        if scheme.two_level:
            s2 = qp["weight_group_scale"].to(torch.int16).repeat_interleave(scheme.group_size, dim=-1)[..., :k]
            codes = (codes.to(torch.int16) * s2).to(torch.int8)  # exact: |q4 * s2| <= 7 * 17 = 119
        w = _kn(codes).to(device)
        out["weight"] = ops.npu_format_cast(w, NZ)
        scale = s[..., 0].to(torch.float32)
        if scheme.static_activations:
            in_s = packed["input_scale"].to(torch.float32).reshape(*packed.shape[:-2], 1)
            zp_t = packed.tensors.get("input_zero_point")
            in_zp = (torch.zeros_like(in_s) if zp_t is None else zp_t.to(torch.float32).reshape(in_s.shape))
            out["input_scale"], out["input_zp"] = in_s.to(device), in_zp.to(device)
            out["deq_scale"] = (in_s * scale).to(device)
            rowsum = codes.to(torch.int64).sum(-1)
            out["quant_bias"] = (-in_zp.to(torch.int64) * rowsum).to(torch.int32).to(device)
        out["scale"] = scale.to(device)
    packed.device_layout[key] = out
    return out


def _weight_only(codes, qp, scheme: QuantScheme, ops, device: str, n: int, k: int) -> dict:
    s = qp["weight_scale"].to(torch.float32)
    zp = qp["weight_zero_point"]
    gs = _group_size(scheme, k)
    out: dict = {"group_size": gs, "k_pad": k}
    if codes.ndim == 3 and gs and k % gs:
        # grouped matmul infers the group size as K / G: pad K with zero-code rows (the activations get
        # zero columns there, so the padding contributes exactly 0)
        k = -(-k // gs) * gs
        codes = torch.nn.functional.pad(codes, (0, k - codes.shape[-1]))
        out["k_pad"] = k
    if scheme.weight_dtype is QType.INT4:
        n_pad = -(-n // 8) * 8
        w = torch.nn.functional.pad(_kn(codes).to(torch.int32), (0, n_pad - n))  # (.., K, Np)
        flat = w.reshape(-1, k, n_pad)
        packed = [ops.npu_convert_weight_to_int4pack(flat[i].to(device)) for i in range(flat.shape[0])]
        out["weight"] = torch.stack(packed).reshape(*w.shape[:-1], n_pad // 8)
    else:
        n_pad = n
        out["weight"] = ops.npu_format_cast(_kn(codes).to(device), NZ)
    scale = torch.nn.functional.pad(_kn(s), (0, n_pad - n), value=1.0)  # (.., G, Np)
    offset = None if zp is None else torch.nn.functional.pad(-_kn(zp.to(torch.float32)), (0, n_pad - n))
    if gs == 0:  # one scale per channel: (.., Np)
        scale = scale[..., 0, :]
        offset = None if offset is None else offset[..., 0, :]
    out["scale"] = scale.to(device)
    out["offset"] = None if offset is None else offset.to(device)
    out["n_pad"] = n_pad
    return out


def dequantized_f32(packed: PackedWeight, scheme: QuantScheme, device: str) -> torch.Tensor:
    """Weight values as float32 [..., K, N] on the device ((q - zp) * s rounded once), cached.

    Used for float32 activations of weight-only schemes: npu_weight_quant_batchmatmul and the antiquant
    grouped matmul accept fp16/bf16 activations only, and rounding fp32 inputs to them would cost ~2^-9.
    """
    key = f"ascend:{runtime.mode()}:f32"
    if key not in packed.device_layout:
        codes, qp = canonical.codes_and_params(packed, scheme)
        w = canonical.dequantize(codes, qp, scheme).to(torch.float32)
        packed.device_layout[key] = _kn(w).to(device)
    return packed.device_layout[key]
