"""ExampleTorchBackend: every verb of dsq's kernel interface for the int8 per-channel schemes, in torch.

Supported: W8A16 (int8 weights, float activations) and W8A8_DYNAMIC (int8 weights, dynamic per-token int8
activations), with either scale rule and float32 or bfloat16 scales. Everything else is declined in
``supports()`` with the reason, which ``dsq backends`` and ``dsq conformance`` show.

Products:
    W8A16:        y = x @ (q * s)^T + bias, in float32 (x widened exactly), rounded once to x.dtype.
    W8A8_DYNAMIC: acc = q_x @ q_w^T exactly (int64), y = acc * s_x * s_w^T + bias in float32 -> x.dtype.
MoE: for each expert with tokens, h = matmul(x_e, gate_up[e]), a = silu(h[:, :I]) * h[:, I:] (float32,
rounded to x.dtype), o = matmul(a, down[e]); y[t] += topk_weight * o, accumulated in float32.
"""

from __future__ import annotations

import torch

from dsq.backend import YES, Backend, Capability
from dsq.errors import QuantInputError
from dsq.qtypes import ExpertWeights, PackedWeight, QParams, QuantizedActivation
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme
from dsq.validate import check_activation, check_bias, check_moe_inputs, check_packed, check_weight

from . import int8


class ExampleTorchBackend(Backend):
    name = "example-torch"
    aliases = ("example",)
    device = "cpu"
    description = "example out-of-tree backend: int8 per-channel schemes in pure PyTorch"

    # -- capability ---------------------------------------------------------------------------------
    def supports(self, scheme: QuantScheme, op: str) -> Capability:
        if scheme.weight_dtype is not QType.INT8 or scheme.weight_granularity is not Granularity.CHANNEL:
            return Capability(False, f"only int8 per-channel weights are implemented; {scheme.name} stores "
                                     f"{scheme.weight_dtype.value} {scheme.weight_granularity.value} weights")
        if not scheme.weight_symmetric:
            return Capability(False, "asymmetric weights are not implemented")
        if scheme.scale_dtype not in ("float32", "bfloat16"):
            return Capability(False, f"scale_dtype {scheme.scale_dtype} is not implemented (float32, bfloat16)")
        if scheme.weight_only:
            if op == "quantize_activation":
                return Capability(False, f"{scheme.name} is weight-only: activations stay in float")
            return YES
        if scheme.act_dtype is not QType.INT8 or scheme.act_granularity is not ActGranularity.TOKEN:
            return Capability(False, "only dynamic per-token int8 activations are implemented "
                                     "(static per-tensor activations are not)")
        return YES

    # -- weights ------------------------------------------------------------------------------------
    def calibrate(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
        self.require(scheme, "calibrate")
        check_weight(weight, scheme)
        return QParams(weight_scale=int8.channel_scale(weight, scheme.weight_divisor(), scheme.scale_dtype))

    def pack(self, weight: torch.Tensor, qparams: QParams, scheme: QuantScheme) -> PackedWeight:
        self.require(scheme, "pack")
        check_weight(weight, scheme)
        scale = qparams.weight_scale
        if tuple(scale.shape) != tuple(weight.shape[:-1]) + (1,):
            raise QuantInputError(f"weight_scale has shape {tuple(scale.shape)}; {scheme.name} expects "
                                  f"{tuple(weight.shape[:-1]) + (1,)} for a weight of shape {tuple(weight.shape)}")
        q = int8.quantize(weight, scale)
        n, k = weight.shape[-2:]
        t = {"weight_packed": int8.pack_words(q)} if scheme.weight_only else {"weight": q}
        t["weight_scale"] = scale.clone()
        t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
        return PackedWeight(scheme.name, tuple(weight.shape), t)

    def _codes(self, packed: PackedWeight) -> torch.Tensor:
        if "weight_packed" in packed:
            return int8.unpack_words(packed["weight_packed"], packed.shape[-1])
        return packed["weight"]

    def unpack(self, packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
        self.require(scheme, "unpack")
        check_packed(packed, scheme, ndim=len(packed.shape))
        q = self._codes(packed)
        return q, q.float() * packed["weight_scale"].float()

    # -- activations and products -------------------------------------------------------------------
    def quantize_activation(self, x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
        self.require(scheme, "quantize_activation")
        check_activation(x, None)
        s = int8.token_scale(x)
        return QuantizedActivation(int8.quantize(x, s), s)

    def matmul(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        self.require(scheme, "matmul")
        check_packed(packed, scheme, ndim=2)
        n, k = packed.shape
        check_activation(x, k)
        check_bias(bias, n)
        q = self._codes(packed)
        s_w = packed["weight_scale"].float()  # [N, 1]
        if scheme.weight_only:
            y = x.float() @ (q.float() * s_w).T
        else:
            qa = self.quantize_activation(x, scheme)
            acc = qa.values.to(torch.int64) @ q.to(torch.int64).T  # exact integer accumulation
            y = acc.float() * qa.scale * s_w.T
        if bias is not None:
            y = y + bias.float()
        return y.to(x.dtype)

    def moe(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            experts: ExpertWeights, scheme: QuantScheme,
            expert_range: tuple[int, int] | None = None) -> torch.Tensor:
        self.require(scheme, "moe")
        check_moe_inputs(x, topk_ids, topk_weights, experts, scheme, expert_range)
        lo, hi = expert_range or (0, experts.num_experts)
        inter = experts.intermediate_size
        y = torch.zeros(x.shape[0], experts.hidden_size, dtype=torch.float32, device=x.device)
        for e in range(lo, hi):
            rows, slots = torch.nonzero(topk_ids == e, as_tuple=True)
            if rows.numel() == 0:
                continue
            h = self.matmul(x[rows], experts.gate_up.expert(e), scheme).float()
            a = (torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]).to(x.dtype)
            o = self.matmul(a, experts.down.expert(e), scheme)
            y.index_add_(0, rows, o.float() * topk_weights[rows, slots].float().unsqueeze(1))
        return y.to(x.dtype)
