"""Containers that travel between the kernel interface's verbs.

All tensors are ``torch.Tensor`` on the backend's device. Shapes use N = output features, K = input
features, M = tokens, E = experts, G = number of scale groups along K. Weights may carry leading batch
dimensions (``[E, N, K]`` for stacked MoE experts); every per-weight tensor then gains the same leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["ActStats", "QParams", "PackedWeight", "QuantizedActivation", "ExpertWeights", "weight_tensor_name"]


def weight_tensor_name(scheme) -> str:
    """Canonical name of a scheme's weight-code tensor, following compressed-tensors' format choice:
    ``"weight_packed"`` (int32 words) for every int4 scheme and for weight-only int8 (W8A16), ``"weight"``
    (int8 or float8_e4m3fn, unpacked) for int8 schemes with quantized activations and for FP8."""
    from dsq.schemes import QType

    if scheme.weight_dtype is QType.INT4 or (scheme.weight_dtype is QType.INT8 and scheme.weight_only):
        return "weight_packed"
    return "weight"


@dataclass
class ActStats:
    """Observed activation range for static schemes: running min and max over calibration data (float)."""

    min_val: float
    max_val: float
    num_tokens: int = 0

    def update(self, x: torch.Tensor) -> ActStats:
        """Fold a batch into the running range (ignores an empty batch)."""
        if x.numel():
            self.min_val = min(self.min_val, float(x.min()))
            self.max_val = max(self.max_val, float(x.max()))
            self.num_tokens += int(x.numel() // x.shape[-1])
        return self

    @classmethod
    def empty(cls) -> ActStats:
        return cls(min_val=float("inf"), max_val=float("-inf"), num_tokens=0)


@dataclass
class QParams:
    """Quantization parameters chosen by ``calibrate`` (before the weight is packed).

    weight_scale: ``scheme.scale_dtype``, shape ``[..., *scheme.scale_shape(N, K)]`` (level-1 scale [N, 1]
        for two-level schemes).
    weight_zero_point: int8, same shape as weight_scale; asymmetric weights only, else None.
    weight_group_scale: int8 ``[..., N, G]`` integer level-2 scales; two-level schemes only, else None.
    input_scale: float32 ``[..., 1]``; static activation schemes only, else None.
    input_zero_point: int8 ``[..., 1]``; static asymmetric activations only, else None.
    """

    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor | None = None
    weight_group_scale: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None
    input_zero_point: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The non-None fields by name."""
        return {k: v for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}


@dataclass
class PackedWeight:
    """A weight in dsq's canonical packed form: the tensors a checkpoint stores, by their canonical names.

    Canonical tensors (compressed-tensors names and layouts where that format has them):
      * ``weight_packed`` int32 ``[..., N, ceil(K*b/32)]``: b-bit codes plus 2^(b-1) (unsigned), element
        ``i`` of a row in bits ``(i % (32/b)) * b`` of word ``i // (32/b)``; padding codes are 0 (value
        -2^(b-1)). Used for W4A16, W4A16_ASYM, W4AFP8, W4A8_DYNAMIC (int4) and W8A16 (int8, four per word).
      * ``weight`` int8 ``[..., N, K]`` (W8A8, W8A8_DYNAMIC) or float8_e4m3fn (FP8_BLOCK).
      * ``weight_scale``: as in :class:`QParams`.
      * ``weight_zero_point`` int32 ``[..., ceil(N/8), G]``: int4 zero points + 8 packed along N (asymmetric).
      * ``weight_group_scale`` int8 ``[..., N, G]`` (two-level), ``input_scale``/``input_zero_point`` (static).
      * ``weight_shape`` int64 ``[2]``: (N, K), which trims packing padding.
    ``scheme`` is the scheme name; ``shape`` the logical weight shape including leading dims.
    ``device_layout`` may hold a backend's private prepared form (never compared by conformance).
    """

    scheme: str
    shape: tuple[int, ...]
    tensors: dict[str, torch.Tensor]
    device_layout: dict = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    @property
    def nbytes(self) -> int:
        """Bytes of the canonical tensors (what a checkpoint stores)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def expert(self, e: int) -> PackedWeight:
        """The e-th slice of a stacked [E, N, K] weight (weight_shape stays [2])."""
        if len(self.shape) != 3:
            raise ValueError(f"expert() needs a stacked [E, N, K] weight, this one has shape {self.shape}")
        sliced = {k: (v if k == "weight_shape" else v[e]) for k, v in self.tensors.items()}
        return PackedWeight(self.scheme, tuple(self.shape[1:]), sliced)


@dataclass
class QuantizedActivation:
    """Output of ``quantize_activation``.

    values: int8 or float8_e4m3fn codes, shape of x ([M, K]).
    scale: float32; [M, 1] per token, [M, ceil(K/128)] per token-group, [1] per tensor.
    zero_point: int8 [1] for static asymmetric activations, else None.
    """

    values: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None = None


@dataclass
class ExpertWeights:
    """Stacked routed-expert weights of one MoE layer, in canonical packed form.

    gate_up: PackedWeight of shape [E, 2I, H]: rows 0..I-1 are the gate projection, I..2I-1 the up projection.
    down: PackedWeight of shape [E, H, I].
    The expert MLP is ``down(silu(gate(x)) * up(x))``.
    """

    gate_up: PackedWeight
    down: PackedWeight

    @property
    def num_experts(self) -> int:
        return self.gate_up.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.gate_up.shape[2]

    @property
    def intermediate_size(self) -> int:
        return self.gate_up.shape[1] // 2
