"""The cpu-reference backend: the oracle every other backend is compared with.

torch tensors come in and go out (the interface every backend shares); in between everything is numpy:
weights.py (calibrate/quantize/dequantize), activations.py, packing.py, gemm.py, numerics.py. It favours
clarity over speed, but stays vectorised so that conformance and model tests run in seconds.
"""

from __future__ import annotations

import numpy as np
import torch

from dsq.backend import YES, Backend, Capability
from dsq.errors import QuantInputError
from dsq.qtypes import ActStats, ExpertWeights, PackedWeight, QParams, QuantizedActivation, weight_tensor_name
from dsq.schemes import QType, QuantScheme
from dsq.validate import (
    act_stats_range,
    check_activation,
    check_bias,
    check_moe_inputs,
    check_packed,
    check_weight,
)

from . import activations, gemm, weights
from .packing import pack_codes, pack_zero_points, unpack_codes, unpack_zero_points

_TORCH_SCALE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _np32(t: torch.Tensor) -> np.ndarray:
    """float tensor (any float dtype/device) -> float32 numpy; exact for bf16/fp16/fp32."""
    return t.detach().to("cpu", torch.float32).numpy()


def _np(t: torch.Tensor) -> np.ndarray:
    """integer or fp8 tensor -> numpy (fp8 as its uint8 bit patterns)."""
    t = t.detach().cpu()
    if t.dtype == torch.float8_e4m3fn:
        t = t.view(torch.uint8)
    return t.numpy()


def _qparams_np(packed_or_qp, scheme: QuantScheme, shape: tuple[int, ...]) -> dict:
    """Numpy view of the scale-like tensors of a QParams or PackedWeight (zero points unpacked)."""
    get = (lambda k: packed_or_qp.tensors.get(k)) if isinstance(packed_or_qp, PackedWeight) else \
        (lambda k: getattr(packed_or_qp, k, None))
    out = {"weight_scale": _np32(get("weight_scale"))}
    zp, gs = get("weight_zero_point"), get("weight_group_scale")
    if zp is not None:
        zp = _np(zp)
        if isinstance(packed_or_qp, PackedWeight) and zp.dtype == np.int32:
            zp = unpack_zero_points(zp, shape[-2], scheme.weight_bits)
        out["weight_zero_point"] = zp.astype(np.int8)
    out["weight_group_scale"] = None if gs is None else _np(gs)
    return out


def _input_qparams(src) -> tuple[np.ndarray | None, np.ndarray | None]:
    if src is None:
        return None, None
    if isinstance(src, PackedWeight):
        s, z = src.tensors.get("input_scale"), src.tensors.get("input_zero_point")
    elif isinstance(src, dict):
        s, z = src.get("input_scale"), src.get("input_zero_point")
    else:
        s, z = getattr(src, "input_scale", None), getattr(src, "input_zero_point", None)
    return (None if s is None else _np32(s)), (None if z is None else _np(z))


class CpuReferenceBackend(Backend):
    """numpy oracle: every scheme x every op, exact float64 GEMMs."""

    name = "cpu-reference"
    aliases = ("cpu", "numpy", "reference")
    device = "cpu"
    description = "numpy reference implementation (the oracle conformance compares against)"

    def supports(self, scheme: QuantScheme, op: str) -> Capability:
        if op == "quantize_activation" and scheme.weight_only:
            return Capability(False, f"{scheme.name} is weight-only: activations stay in float")
        return YES

    # -- calibrate / pack / unpack ------------------------------------------------------------------
    def calibrate(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
        check_weight(weight, scheme)
        qp = weights.calibrate_weight(_np32(weight), scheme)
        to_scale = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(_TORCH_SCALE[scheme.scale_dtype])  # noqa: E731
        out = QParams(weight_scale=to_scale(qp["weight_scale"]))
        if qp["weight_zero_point"] is not None:
            out.weight_zero_point = torch.from_numpy(qp["weight_zero_point"])
        if qp["weight_group_scale"] is not None:
            out.weight_group_scale = torch.from_numpy(qp["weight_group_scale"])
        if scheme.static_activations:
            lo, hi = act_stats_range(act_stats, tuple(weight.shape[:-2]), scheme)
            s, zp = weights.calibrate_static_activation(lo.numpy(), hi.numpy(), scheme)
            out.input_scale = torch.from_numpy(s)
            if not scheme.act_symmetric:
                out.input_zero_point = torch.from_numpy(zp)
        return out

    def pack(self, weight: torch.Tensor, qparams: QParams, scheme: QuantScheme) -> PackedWeight:
        check_weight(weight, scheme)
        w = _np32(weight)
        qp = _qparams_np(qparams, scheme, w.shape)
        n, k = w.shape[-2:]
        if tuple(qp["weight_scale"].shape) != w.shape[:-2] + scheme.scale_shape(n, k):
            raise QuantInputError(f"weight_scale has shape {qp['weight_scale'].shape}; {scheme.name} expects "
                                  f"{w.shape[:-2] + scheme.scale_shape(n, k)} for a weight of shape {w.shape}")
        codes = weights.quantize_weight(w, qp, scheme)
        t: dict[str, torch.Tensor] = {}
        if scheme.weight_dtype is QType.FP8_E4M3:
            t["weight"] = torch.from_numpy(codes).view(torch.float8_e4m3fn)
        elif weight_tensor_name(scheme) == "weight_packed":
            t["weight_packed"] = torch.from_numpy(pack_codes(codes, scheme.weight_bits))
        else:
            t["weight"] = torch.from_numpy(codes)
        t["weight_scale"] = qparams.weight_scale.detach().cpu().to(_TORCH_SCALE[scheme.scale_dtype]).clone()
        if qp.get("weight_zero_point") is not None:
            t["weight_zero_point"] = torch.from_numpy(pack_zero_points(qp["weight_zero_point"], scheme.weight_bits))
        if qp.get("weight_group_scale") is not None:
            t["weight_group_scale"] = torch.from_numpy(np.ascontiguousarray(qp["weight_group_scale"]))
        if scheme.static_activations:
            if qparams.input_scale is None:
                raise QuantInputError(f"{scheme.name} needs input_scale in QParams (calibrate with act_stats)")
            t["input_scale"] = qparams.input_scale.detach().cpu().to(torch.float32).clone()
            if qparams.input_zero_point is not None:
                t["input_zero_point"] = qparams.input_zero_point.detach().cpu().to(torch.int8).clone()
        t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
        return PackedWeight(scheme.name, tuple(w.shape), t)

    def _codes(self, packed: PackedWeight, scheme: QuantScheme) -> np.ndarray:
        n, k = packed.shape[-2:]
        if "weight_packed" in packed:
            return unpack_codes(_np(packed["weight_packed"]), scheme.weight_bits, k)
        if "weight" not in packed:
            raise QuantInputError(f"packed {scheme.name} weight has neither weight_packed nor weight "
                                  f"(tensors: {sorted(packed.tensors)})")
        return _np(packed["weight"])

    def unpack(self, packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
        check_packed(packed, scheme, ndim=len(packed.shape))
        codes = self._codes(packed, scheme)
        deq = weights.dequantize_weight(codes, _qparams_np(packed, scheme, packed.shape), scheme)
        codes_t = torch.from_numpy(np.ascontiguousarray(codes))
        if scheme.weight_dtype is QType.FP8_E4M3:
            codes_t = codes_t.view(torch.float8_e4m3fn)
        return codes_t, torch.from_numpy(deq.astype(np.float32))

    # -- activations and products -------------------------------------------------------------------
    def quantize_activation(self, x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
        self.require(scheme, "quantize_activation")
        check_activation(x, None)
        s_in, z_in = _input_qparams(act_qparams)
        codes, s, zp = activations.quantize_activation(_np32(x), scheme, s_in, z_in)
        values = torch.from_numpy(codes)
        if scheme.act_dtype is QType.FP8_E4M3:
            values = values.view(torch.float8_e4m3fn)
        return QuantizedActivation(values, torch.from_numpy(s), None if zp is None else torch.from_numpy(zp))

    def _x_exact(self, x: torch.Tensor, scheme: QuantScheme, act_src) -> np.ndarray:
        x32 = _np32(x)
        if scheme.weight_only:
            return x32.astype(np.float64)
        s_in, z_in = _input_qparams(act_src)
        codes, s, zp = activations.quantize_activation(x32, scheme, s_in, z_in)
        return activations.dequantize_activation(codes, s, zp, scheme)

    def matmul(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        check_packed(packed, scheme, ndim=2)
        n, k = packed.shape
        check_activation(x, k)
        check_bias(bias, n)
        w = weights.dequantize_weight(self._codes(packed, scheme), _qparams_np(packed, scheme, packed.shape), scheme)
        y = gemm.exact_matmul(self._x_exact(x, scheme, packed), w, None if bias is None else _np32(bias))
        return torch.from_numpy(y.astype(np.float32)).to(x.dtype)

    def moe(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            experts: ExpertWeights, scheme: QuantScheme,
            expert_range: tuple[int, int] | None = None) -> torch.Tensor:
        check_moe_inputs(x, topk_ids, topk_weights, experts, scheme, expert_range)
        lo, hi = expert_range or (0, experts.num_experts)
        ids = topk_ids.detach().cpu().numpy()
        tw = topk_weights.detach().cpu().to(torch.float64).numpy()
        y = np.zeros((x.shape[0], experts.hidden_size), np.float64)
        for e in range(lo, hi):
            rows, slots = np.nonzero(ids == e)
            if rows.size == 0:  # an expert without tokens costs nothing
                continue
            h = self.matmul(x[torch.from_numpy(rows)], experts.gate_up.expert(e), scheme)
            a = torch.from_numpy(gemm.silu_mul(_np32(h))).to(x.dtype)
            o = self.matmul(a, experts.down.expert(e), scheme)
            np.add.at(y, rows, tw[rows, slots][:, None] * _np32(o).astype(np.float64))
        return torch.from_numpy(y.astype(np.float32)).to(x.dtype)


def stats_from_tensor(x: torch.Tensor) -> ActStats:
    """ActStats of one activation tensor (helper for tests and examples)."""
    return ActStats.empty().update(x)
