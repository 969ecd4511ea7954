"""The format-neutral form of a quantized checkpoint: one :class:`QuantEntry` per on-disk linear module.

Routed experts are fused in memory (:class:`~dsq.qtypes.ExpertWeights`: gate_up ``[E, 2I, H]``, down
``[E, H, I]``) but every consumer names them per expert on disk. :func:`split_experts` cuts a fused block into
per-expert gate / up / down 2-D canonical weights named by the model's MoE adapter
(``<experts>.<e>.gate_proj`` for DeepSeek-V3), using the adapter's row-wise split of canonical tensors
(:func:`dsq.adapters.split_packed_gate_up`); :func:`stack_experts` is the inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsq.adapters import MoEAdapter, fuse_packed_gate_up, split_packed_gate_up
from dsq.errors import CheckpointError, QuantInputError
from dsq.qtypes import ExpertWeights, PackedWeight
from dsq.schemes import QuantScheme

__all__ = ["QuantEntry", "split_experts", "stack_experts"]


@dataclass
class QuantEntry:
    """One quantized linear as stored: on-disk module name, scheme, 2-D canonical weight, optional float bias."""

    name: str
    scheme: QuantScheme
    packed: PackedWeight
    bias: torch.Tensor | None = None


def _copy(p: PackedWeight) -> PackedWeight:
    return PackedWeight(p.scheme, tuple(p.shape), {k: v.clone() for k, v in p.tensors.items()})


def split_experts(adapter: MoEAdapter, fused_name: str, weights: ExpertWeights,
                  scheme: QuantScheme) -> list[QuantEntry]:
    """Per-expert entries (gate, up, down for e = 0..E-1) of a fused expert block."""
    names = adapter.expert_names(fused_name, weights.num_experts)
    out = []
    for e in range(weights.num_experts):
        try:
            gate, up = split_packed_gate_up(weights.gate_up.expert(e), scheme)
        except QuantInputError as exc:
            raise CheckpointError(f"{fused_name} expert {e}: {exc}") from exc
        out.append(QuantEntry(names[e]["gate"], scheme, _copy(gate)))
        out.append(QuantEntry(names[e]["up"], scheme, _copy(up)))
        out.append(QuantEntry(names[e]["down"], scheme, _copy(weights.down.expert(e))))
    return out


def _stack(parts: list[PackedWeight]) -> PackedWeight:
    out = {k: (parts[0][k] if k == "weight_shape" else torch.stack([p[k] for p in parts])) for k in parts[0].tensors}
    return PackedWeight(parts[0].scheme, (len(parts), *parts[0].shape), out)


def stack_experts(fused_name: str, per_expert: list[tuple[PackedWeight, PackedWeight, PackedWeight]],
                  scheme: QuantScheme) -> ExpertWeights:
    """ExpertWeights from per-expert (gate, up, down) canonical weights (inverse of :func:`split_experts`)."""
    gate_up = []
    for e, (g, u, _) in enumerate(per_expert):
        try:
            gate_up.append(fuse_packed_gate_up(g, u, scheme))
        except QuantInputError as exc:
            raise CheckpointError(f"{fused_name} expert {e}: {exc}") from exc
    return ExpertWeights(gate_up=_stack(gate_up), down=_stack([d for _, _, d in per_expert]))
