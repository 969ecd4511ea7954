"""The ascend backend: dsq's kernel interface on Huawei Ascend 910B/910C through torch_npu's fused ops.

The same code runs on real torch_npu ("hardware" mode) or on :mod:`dsq_ascend.emulated_ops` on CPU
("emulated" mode, ``DSQ_EMULATE=1``); :mod:`dsq_ascend.runtime` picks the op namespace. Op per scheme:

    W8A16, W4A16, W4A16_ASYM   npu_weight_quant_batchmatmul (antiquant offset = -zero point)
    W8A8 (static, asym)        npu_quantize / torch round + npu_quant_matmul(deq_scale, int32 quant_bias)
    W8A8_DYNAMIC, W4A8_DYNAMIC npu_dynamic_quant + npu_quant_matmul(weight scale, pertoken_scale)
                               (W4A8: int8 weight q4 * s2 rebuilt at load, exact; scale s1)
    W4AFP8, FP8_BLOCK          unsupported: A2/A3 have no fp8 matmul units and torch_npu no fp8 ops for them

float32 activations: the int8 matmuls return their int32 accumulator (output_dtype=int32) and the
scales are applied in float32 on the device (A2/A3 produce no float32 from int8 matmuls); the
weight-only ops take fp16/bf16 only, so float32 x multiplies the dequantized float32 weight with
torch.matmul (no fused op; documented in docs/ascend.md).
calibrate/pack/unpack run on the host (see dsq_ascend.canonical).
"""

from __future__ import annotations

import torch

from dsq.backend import YES, Backend, Capability
from dsq.errors import QuantInputError
from dsq.qtypes import ExpertWeights, PackedWeight, QParams, QuantizedActivation
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme
from dsq.validate import (
    act_stats_range,
    check_activation,
    check_bias,
    check_moe_inputs,
    check_packed,
    check_weight,
)

from . import activations, canonical, prepare, runtime
from .moe import run_moe


def _input_qparams(src):
    if src is None:
        return None, None
    if isinstance(src, PackedWeight):
        return src.tensors.get("input_scale"), src.tensors.get("input_zero_point")
    if isinstance(src, dict):
        return src.get("input_scale"), src.get("input_zero_point")
    return getattr(src, "input_scale", None), getattr(src, "input_zero_point", None)


class AscendBackend(Backend):
    """torch_npu fused quantized ops (vllm-ascend's call patterns), or their CPU emulation."""

    name = "ascend"
    aliases = ("npu",)
    description = "Huawei Ascend 910B/910C via torch_npu fused ops (DSQ_EMULATE=1: CPU emulation of those ops)"

    # -- discovery ----------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """"emulated" (DSQ_EMULATE=1, CPU) or "hardware" (torch_npu on an NPU)."""
        return runtime.mode()

    @property
    def device(self) -> str:  # type: ignore[override]
        return runtime.device()

    @property
    def ops(self):
        return runtime.get_ops()

    def is_available(self) -> tuple[bool, str]:
        if runtime.emulation_requested():
            return True, ""
        return runtime.hardware_status()

    def supports(self, scheme: QuantScheme, op: str) -> Capability:
        if scheme.weight_dtype is QType.FP8_E4M3 or scheme.act_dtype is QType.FP8_E4M3:
            return Capability(False, "Ascend 910B/910C (A2/A3) have no fp8 matmul units and torch_npu exposes no "
                                     "fp8 quantized matmul for them; use W8A8_DYNAMIC or W4A8_DYNAMIC")
        if scheme.weight_granularity is Granularity.BLOCK:
            return Capability(False, "block-scaled integer weights have no torch_npu kernel")
        if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
            return Capability(False, "per-token-group activation scales have no torch_npu int8 kernel")
        if scheme.weight_only and scheme.weight_dtype is QType.INT4 and scheme.group_size % 32:
            return Capability(False, f"npu_weight_quant_batchmatmul needs a group size that is a multiple of 32, "
                                     f"got {scheme.group_size}")
        if op == "quantize_activation" and scheme.weight_only:
            return Capability(False, f"{scheme.name} is weight-only: activations stay in float")
        if op == "moe" and scheme.static_activations:
            return Capability(False, "static per-tensor activation scales per expert: vllm-ascend dropped static "
                                     "W8A8 MoE (its v0.11 path shared one max input scale across experts, which is "
                                     "not dsq's per-expert rule); use W8A8_DYNAMIC for experts")
        return YES

    # -- calibrate / pack / unpack (host, bit-exact) ------------------------------------------------
    def calibrate(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
        self.require(scheme, "calibrate")
        check_weight(weight, scheme)
        qp = canonical.calibrate_weight(weight.detach().cpu().to(torch.float32), scheme)
        if scheme.static_activations:
            lo, hi = act_stats_range(act_stats, tuple(weight.shape[:-2]), scheme)
            qp.input_scale, qp.input_zero_point = canonical.calibrate_static_activation(lo, hi, scheme)
        return qp

    def pack(self, weight: torch.Tensor, qparams: QParams, scheme: QuantScheme) -> PackedWeight:
        self.require(scheme, "pack")
        check_weight(weight, scheme)
        return canonical.pack(weight.detach().cpu().to(torch.float32), qparams, scheme)

    def unpack(self, packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
        self.require(scheme, "unpack")
        check_packed(packed, scheme, ndim=len(packed.shape))
        codes, qp = canonical.codes_and_params(packed, scheme)
        return codes, canonical.dequantize(codes, qp, scheme).to(torch.float32)

    # -- activations --------------------------------------------------------------------------------
    def quantize_activation(self, x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
        self.require(scheme, "quantize_activation")
        check_activation(x, None)
        ops, dev = self.ops, self.device
        x = x.to(dev)
        if scheme.static_activations:
            s, zp = self._static_params(act_qparams, scheme)
            q = activations.static_int8(x, s.to(dev), zp.to(torch.float32).to(dev), scheme.act_rounding, ops)
            return QuantizedActivation(q, s.to(dev), None if scheme.act_symmetric else zp.to(torch.int8).to(dev))
        q, s = activations.dynamic_int8(x, ops)
        return QuantizedActivation(q, s.reshape(-1, 1))

    @staticmethod
    def _static_params(act_qparams, scheme: QuantScheme):
        s, zp = _input_qparams(act_qparams)
        if s is None:
            raise QuantInputError(f"{scheme.name} has static activations: pass the calibrated input_scale "
                                  "(the packed weight or QParams holding input_scale / input_zero_point)")
        s = s.detach().to(torch.float32).reshape(1)
        if not (bool(torch.isfinite(s).all()) and float(s[0]) > 0):
            raise QuantInputError(f"input_scale must be a positive finite float32, got {s.tolist()}")
        zp = torch.zeros(1, dtype=torch.int8) if zp is None else zp.detach().to(torch.int8).reshape(1)
        return s, zp

    # -- matmul -------------------------------------------------------------------------------------
    def matmul(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        self.require(scheme, "matmul")
        check_packed(packed, scheme, ndim=2)
        n, k = packed.shape
        check_activation(x, k)
        check_bias(bias, n)
        ops, dev = self.ops, self.device
        dl = prepare.prepare(packed, scheme, ops, dev)
        x = x.to(dev)
        bias = None if bias is None else bias.to(dev)
        if x.shape[0] == 0:
            return torch.zeros((0, n), dtype=x.dtype, device=dev)
        if scheme.weight_only:
            return self._weight_only(x, packed, scheme, dl, bias, ops)
        if scheme.static_activations:
            xq = activations.static_int8(x, dl["input_scale"].reshape(1), dl["input_zp"].reshape(1),
                                         scheme.act_rounding, ops)
            scale, pts, int_bias = dl["deq_scale"], None, dl["quant_bias"]
        else:
            xq, pts = activations.dynamic_int8(x, ops)
            scale, int_bias = dl["scale"], None
        return int8_matmul(ops, xq, dl["weight"], scale, pts, int_bias, bias, x.dtype)

    def _weight_only(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme, dl: dict, bias,
                     ops) -> torch.Tensor:
        if x.dtype == torch.float32:  # the fused op takes fp16/bf16 only: dequantize, fp32 torch matmul
            y = x @ prepare.dequantized_f32(packed, scheme, self.device)
            return y if bias is None else y + bias.to(torch.float32)
        cd = x.dtype
        n, n_pad = dl["n"], dl["n_pad"]
        b = None
        if bias is not None:
            b = torch.nn.functional.pad(bias.to(torch.float16 if cd == torch.float16 else torch.float32),
                                        (0, n_pad - n))
        off = None if dl["offset"] is None else dl["offset"].to(cd)
        y = ops.npu_weight_quant_batchmatmul(x.to(cd), dl["weight"], dl["scale"].to(cd), off, bias=b,
                                             antiquant_group_size=dl["group_size"])
        return y[:, :n].to(x.dtype)

    # -- MoE ----------------------------------------------------------------------------------------
    def moe(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            experts: ExpertWeights, scheme: QuantScheme,
            expert_range: tuple[int, int] | None = None) -> torch.Tensor:
        self.require(scheme, "moe")
        check_moe_inputs(x, topk_ids, topk_weights, experts, scheme, expert_range)
        ops, dev = self.ops, self.device
        w13 = prepare.prepare(experts.gate_up, scheme, ops, dev)
        w2 = prepare.prepare(experts.down, scheme, ops, dev)
        lo, hi = expert_range or (0, experts.num_experts)
        if scheme.weight_only and x.dtype == torch.float32:
            w13["f32"] = prepare.dequantized_f32(experts.gate_up, scheme, dev)
            w2["f32"] = prepare.dequantized_f32(experts.down, scheme, dev)
        return run_moe(ops, x.to(dev), topk_ids.to(dev), topk_weights.to(dev), w13, w2, scheme, lo, hi,
                       experts.num_experts)


def int8_matmul(ops, xq, w, scale, pts, int_bias, bias, out_dtype: torch.dtype) -> torch.Tensor:
    """``npu_quant_matmul`` with the epilogue the output dtype allows.

    bf16/fp16: the op applies ``(acc + int_bias) * scale [* pts] (+ bias)`` and rounds once. float32
    output, or a float bias on top of an int32 quant_bias (the op takes one bias): the op returns the
    int32 accumulator (+ quant_bias) and the epilogue runs here in float32, still rounding once.
    """
    if out_dtype == torch.float32 or (int_bias is not None and bias is not None):
        acc = ops.npu_quant_matmul(xq, w, scale, bias=int_bias, output_dtype=torch.int32)
        y = acc.to(torch.float32) * scale
        if pts is not None:
            y = y * pts.unsqueeze(-1)
        return (y if bias is None else y + bias.to(torch.float32)).to(out_dtype)
    op_bias = int_bias if int_bias is not None else (None if bias is None else bias.to(torch.float32))
    return ops.npu_quant_matmul(xq, w, scale, pertoken_scale=pts, bias=op_bias, output_dtype=out_dtype)
