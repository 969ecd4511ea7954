"""torch modules that run quantized weights through a dsq backend.

:class:`QuantLinear` replaces ``nn.Linear``: ``y = x @ W^T + b`` where W is the dequantized packed weight and
x is quantized first when the scheme quantizes activations; the numbers are exactly those of
``backend.matmul`` (see :mod:`dsq.schemes`). :class:`QuantExperts` replaces a fused routed-experts block
(transformers' ``gate_up_proj`` [E, 2I, H] / ``down_proj`` [E, H, I]) and runs ``backend.moe``:
``y[t] = sum_j w[t, j] * down_e(silu(gate_e(x[t])) * up_e(x[t]))`` over the experts e = ids[t, j] the router
picked. Packed tensors live in ``.packed`` / ``.weights`` (canonical layouts of :mod:`dsq.qtypes`), not in
the module's state_dict; checkpoints are written by :mod:`dsq.checkpoint`.
"""

from __future__ import annotations

import torch
from torch import nn

from dsq.backend import Backend
from dsq.qtypes import ActStats, ExpertWeights, PackedWeight
from dsq.registry import get_backend
from dsq.schemes import QuantScheme
from dsq.validate import check_weight

__all__ = ["QuantLinear", "QuantExperts", "QuantMoE"]


def _device_of(packed: PackedWeight) -> torch.device:
    """Where a packed weight's tensors live (inputs are moved there; outputs come back to the caller's device)."""
    return packed.tensors["weight_scale"].device


class QuantLinear(nn.Module):
    """A linear layer with a packed weight ``[N, K]``; forward(x[..., K]) -> [..., N] in ``out_dtype``.

    Args:
        packed: the canonical packed weight (``packed.shape == (N, K)``).
        scheme: the scheme it was packed with (static schemes carry ``input_scale`` inside ``packed``).
        bias: float ``[N]`` or None; added by the backend in the exact product.
        backend: a Backend or its name.
        dtype: the float dtype activations are computed in (the original layer's weight dtype).
    """

    def __init__(self, packed: PackedWeight, scheme: QuantScheme, bias: torch.Tensor | None,
                 backend: str | Backend, dtype: torch.dtype = torch.float32):
        super().__init__()
        if len(packed.shape) != 2:
            raise ValueError(f"QuantLinear needs a [N, K] packed weight, got shape {packed.shape}")
        self.packed = packed
        self.scheme = scheme
        self.backend = get_backend(backend)
        self.out_features, self.in_features = (int(d) for d in packed.shape)
        self.out_dtype = dtype
        if bias is not None:
            bias = bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: QuantScheme, backend: str | Backend,
                    act_stats: ActStats | None = None, name: str = "weight") -> QuantLinear:
        """Quantize ``linear.weight`` with ``backend.calibrate`` + ``pack``; ``name`` labels errors."""
        backend = get_backend(backend)
        weight = linear.weight.detach()
        check_weight(weight, scheme, name)
        # one layer at a time on the backend's device: a CPU model quantizes on a single accelerator
        weight = weight.to(backend.device)
        packed = backend.quantize_weight(weight, scheme, act_stats)
        bias = None if linear.bias is None else linear.bias.detach().to(backend.device)
        return cls(packed, scheme, bias, backend, weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]).to(device=_device_of(self.packed), dtype=self.out_dtype)
        y = self.backend.matmul(x2, self.packed, self.scheme, self.bias)
        return y.to(x.device).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.scheme.name}, backend={self.backend.name}")


class QuantExperts(nn.Module):
    """Fused routed experts: ``forward(hidden_states[T, H], top_k_index[T, k], top_k_weights[T, k]) -> [T, H]``.

    The signature is that of transformers' fused experts modules (DeepseekV3Experts, MixtralExperts,
    Qwen2MoeExperts), so the surrounding MoE block keeps routing and calls this instead. The expert MLP is
    ``down(silu(gate(x)) * up(x))`` with gate rows 0..I-1 and up rows I..2I-1 of ``gate_up``.
    """

    def __init__(self, weights: ExpertWeights, scheme: QuantScheme, backend: str | Backend,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.weights = weights
        self.scheme = scheme
        self.backend = get_backend(backend)
        self.num_experts = weights.num_experts
        self.hidden_dim = weights.hidden_size
        self.intermediate_dim = weights.intermediate_size
        self.out_dtype = dtype

    @classmethod
    def from_tensors(cls, gate_up: torch.Tensor, down: torch.Tensor, scheme: QuantScheme,
                     backend: str | Backend, act_stats: dict[str, list[ActStats]] | None = None,
                     name: str = "experts") -> QuantExperts:
        """Quantize float ``gate_up`` [E, 2I, H] and ``down`` [E, H, I]; ``act_stats`` (static schemes) holds
        one ActStats per expert for each: ``{"gate_up": [...E], "down": [...E]}``."""
        backend = get_backend(backend)
        check_weight(gate_up, scheme, f"{name}.gate_up_proj")
        check_weight(down, scheme, f"{name}.down_proj")
        stats = act_stats or {}
        packed_gu = backend.quantize_weight(gate_up.detach().to(backend.device), scheme, stats.get("gate_up"))
        packed_dn = backend.quantize_weight(down.detach().to(backend.device), scheme, stats.get("down"))
        return cls(ExpertWeights(packed_gu, packed_dn), scheme, backend, gate_up.dtype)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        dev = _device_of(self.weights.gate_up)
        x = hidden_states.reshape(-1, hidden_states.shape[-1]).to(device=dev, dtype=self.out_dtype)
        ids = top_k_index.reshape(x.shape[0], -1).to(dev)
        w = top_k_weights.reshape(x.shape[0], -1).to(dev)
        y = self.backend.moe(x, ids, w, self.weights, self.scheme)
        return y.to(device=hidden_states.device, dtype=hidden_states.dtype).reshape(hidden_states.shape)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden={self.hidden_dim}, intermediate={self.intermediate_dim}, "
                f"scheme={self.scheme.name}, backend={self.backend.name}")


#: the name the model-quantization issue and the README use for the quantized MoE expert block
QuantMoE = QuantExperts


def prepare_for_graphs(model: nn.Module) -> int:
    """Build every dsq layer's backend device layouts now (``Backend.prepare``), so that no layout is built
    inside CUDA graph capture. Returns the number of layers prepared."""
    count = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.backend.prepare(module.packed, module.scheme)
        elif isinstance(module, QuantExperts):
            module.backend.prepare(module.weights, module.scheme)
        else:
            continue
        count += 1
    return count
