"""The MoE adapter interface: where an architecture keeps its routed experts and what they are called.

dsq quantizes routed experts as one fused block per MoE layer, in transformers' fused layout:
``gate_up`` [E, 2I, H] (rows 0..I-1 the gate projection, I..2I-1 the up projection) and ``down`` [E, H, I],
expert MLP ``down(silu(gate(x)) * up(x))``. Checkpoints and serving engines name experts one by one instead
(``<layer>.mlp.experts.<e>.gate_proj``). An adapter bridges the two:

* :meth:`MoEAdapter.find_experts` -- the fused expert modules of a model, by module name;
* :meth:`MoEAdapter.expert_tensors` -- their float ``(gate_up, down)`` tensors, shape-checked;
* :meth:`MoEAdapter.expert_names` / :meth:`MoEAdapter.parse_expert_name` -- fused name <-> per-expert names;
* :func:`split_gate_up` / :func:`fuse_gate_up` (float) and :func:`split_packed_gate_up` /
  :func:`fuse_packed_gate_up` (canonical packed weights) -- gate_up <-> separate gate and up;
* :meth:`MoEAdapter.build` -- the :class:`~dsq.nn.QuantExperts` that replaces a block.

A new architecture subclasses :class:`MoEAdapter`, sets ``model_types`` / ``expert_classes`` (and
``proj_names`` / :meth:`disk_prefix` when its checkpoints use other names) and registers an instance with
:func:`dsq.adapters.register_adapter`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from dsq.errors import QuantInputError, UnsupportedError
from dsq.qtypes import ActStats, PackedWeight
from dsq.schemes import Granularity, QuantScheme

__all__ = ["MoEAdapter", "split_gate_up", "fuse_gate_up", "split_packed_gate_up", "fuse_packed_gate_up"]


def split_gate_up(gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 2I, H] -> (gate [..., I, H], up [..., I, H]): gate is the first half of the rows."""
    rows = gate_up.shape[-2]
    if rows % 2:
        raise QuantInputError(f"gate_up has {rows} rows; expected an even 2*I (gate rows then up rows)")
    return gate_up[..., : rows // 2, :], gate_up[..., rows // 2:, :]


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_gate_up`."""
    if gate.shape != up.shape:
        raise QuantInputError(f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    return torch.cat([gate, up], dim=-2)


def _row_split(name: str, t: torch.Tensor, scheme: QuantScheme, i: int) -> int | None:
    """Rows of canonical tensor ``name`` that belong to the gate half of a gate_up weight with I = ``i``
    (None: the tensor is shared by both halves). Raises when the halves do not start on a row boundary."""
    if name in ("input_scale", "input_zero_point", "weight_shape"):
        return None
    if name == "weight_zero_point":  # packed 32/b per int32 along N
        per_word = 32 // scheme.weight_bits
        if i % per_word:
            raise QuantInputError(f"cannot split gate_up: I={i} is not a multiple of {per_word}, the zero points "
                                  "packed per int32 word along the output dimension")
        return i // per_word
    if name == "weight_scale" and scheme.weight_granularity is Granularity.BLOCK and not scheme.two_level:
        bn = scheme.block_size[0]
        if i % bn:
            raise QuantInputError(f"cannot split gate_up: I={i} is not a multiple of the {bn}-row scale block")
        return i // bn
    return i


def split_packed_gate_up(packed: PackedWeight, scheme: QuantScheme) -> tuple[PackedWeight, PackedWeight]:
    """A packed gate_up [..., 2I, H] -> (gate, up) packed [..., I, H], tensor by tensor (row-wise tensors
    are cut at row I; ``input_scale``/``input_zero_point`` are shared, both halves see the same input)."""
    *lead, two_i, h = packed.shape
    if two_i % 2:
        raise QuantInputError(f"packed gate_up has {two_i} rows; expected an even 2*I")
    i = two_i // 2
    gate, up = {}, {}
    for name, t in packed.tensors.items():
        cut = _row_split(name, t, scheme, i)
        if name == "weight_shape":
            gate[name] = up[name] = torch.tensor([i, h], dtype=torch.int64)
        elif cut is None:
            gate[name], up[name] = t.clone(), t.clone()
        else:
            gate[name], up[name] = t[..., :cut, :].contiguous(), t[..., cut:, :].contiguous()
    shape = (*lead, i, h)
    return PackedWeight(packed.scheme, shape, gate), PackedWeight(packed.scheme, shape, up)


def fuse_packed_gate_up(gate: PackedWeight, up: PackedWeight, scheme: QuantScheme) -> PackedWeight:
    """Inverse of :func:`split_packed_gate_up`. Shared tensors (input scales) must agree."""
    if gate.shape != up.shape or set(gate.tensors) != set(up.tensors):
        raise QuantInputError(f"gate (shape {gate.shape}, tensors {sorted(gate.tensors)}) and up (shape {up.shape}, "
                              f"tensors {sorted(up.tensors)}) must match to be fused")
    *lead, i, h = gate.shape
    out = {}
    for name, t in gate.tensors.items():
        if name == "weight_shape":
            out[name] = torch.tensor([2 * i, h], dtype=torch.int64)
        elif _row_split(name, t, scheme, i) is None:
            if not torch.equal(t, up.tensors[name]):
                raise QuantInputError(f"gate and up have different {name}; a fused gate_up shares one input")
            out[name] = t.clone()
        else:
            out[name] = torch.cat([t, up.tensors[name]], dim=-2)
    return PackedWeight(gate.scheme, (*lead, 2 * i, h), out)


class MoEAdapter:
    """Generic adapter for transformers' fused experts (any class with 3-D ``gate_up_proj``/``down_proj``).

    Subclasses narrow the match (``model_types``, ``expert_classes``) and may rename experts on disk.
    """

    name = "fused-experts"
    #: transformers ``config.model_type`` values this adapter is chosen for
    model_types: tuple[str, ...] = ()
    #: class names of the fused expert modules; empty = any module holding 3-D gate_up_proj and down_proj
    expert_classes: tuple[str, ...] = ()
    #: per-expert projection names on disk, in order (gate, up, down)
    proj_names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")

    # -- discovery ----------------------------------------------------------------------------------
    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter is meant for ``model`` (by config.model_type or by expert classes)."""
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type is not None and model_type in self.model_types:
            return True
        return bool(self.expert_classes) and any(type(m).__name__ in self.expert_classes for m in model.modules())

    def is_experts(self, module: nn.Module) -> bool:
        if self.expert_classes and type(module).__name__ not in self.expert_classes:
            return False
        gu, dn = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        return isinstance(gu, torch.Tensor) and isinstance(dn, torch.Tensor) and gu.ndim == 3 and dn.ndim == 3

    def find_experts(self, model: nn.Module) -> dict[str, nn.Module]:
        """Fused routed-expert modules by module name, in model order."""
        return {n: m for n, m in model.named_modules() if self.is_experts(m)}

    def expert_tensors(self, module: nn.Module, name: str = "experts") -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up [E, 2I, H], down [E, H, I]) float tensors of a fused block; checks shapes and activation."""
        gu, dn = module.gate_up_proj, module.down_proj
        e, two_i, h = gu.shape
        if two_i % 2 or tuple(dn.shape) != (e, h, two_i // 2):
            raise QuantInputError(f"{name}: gate_up_proj {tuple(gu.shape)} and down_proj {tuple(dn.shape)} are not "
                                  "[E, 2I, H] and [E, H, I]")
        for attr in ("gate_up_proj_bias", "down_proj_bias"):
            if getattr(module, attr, None) is not None:
                raise UnsupportedError(f"{name} has {attr}; dsq expert blocks have no biases")
        act = getattr(module, "act_fn", None)
        if act is not None and not isinstance(act, nn.SiLU) and type(act).__name__ not in ("SiLUActivation", "SiLU"):
            raise UnsupportedError(f"{name} uses activation {type(act).__name__}; dsq expert blocks compute "
                                   "down(silu(gate(x)) * up(x))")
        return gu, dn

    def expert_shape(self, module: nn.Module) -> tuple[int, int, int]:
        """(E, I, H) without touching values (works on meta tensors)."""
        e, two_i, h = module.gate_up_proj.shape
        return int(e), int(two_i) // 2, int(h)

    # -- names --------------------------------------------------------------------------------------
    def disk_prefix(self, fused_name: str) -> str:
        """Per-expert name prefix on disk for a fused module name (``x.mlp.experts`` -> ``x.mlp.experts``)."""
        return fused_name

    def expert_names(self, fused_name: str, num_experts: int) -> list[dict[str, str]]:
        """Per-expert module names on disk: ``[{"gate": ..., "up": ..., "down": ...}]`` for e = 0..E-1."""
        prefix = self.disk_prefix(fused_name)
        g, u, d = self.proj_names
        return [{"gate": f"{prefix}.{e}.{g}", "up": f"{prefix}.{e}.{u}", "down": f"{prefix}.{e}.{d}"}
                for e in range(num_experts)]

    def parse_expert_name(self, name: str, fused_names: list[str]) -> tuple[str, int, str] | None:
        """Inverse of :meth:`expert_names`: ``(fused_name, expert, "gate"|"up"|"down")`` for a per-expert
        module name (a trailing ``.weight``-style tensor suffix is allowed), or None."""
        roles = dict(zip(self.proj_names, ("gate", "up", "down")))
        for fused in fused_names:
            prefix = re.escape(self.disk_prefix(fused))
            m = re.match(rf"^{prefix}\.(\d+)\.({'|'.join(map(re.escape, self.proj_names))})(\..*)?$", name)
            if m:
                return fused, int(m.group(1)), roles[m.group(2)]
        return None

    # -- building -----------------------------------------------------------------------------------
    def build(self, module: nn.Module, scheme: QuantScheme, backend, act_stats: dict[str, list[ActStats]] | None = None,
              name: str = "experts"):
        """The QuantExperts replacing ``module`` (weights quantized with ``backend``)."""
        from dsq.nn import QuantExperts

        gate_up, down = self.expert_tensors(module, name)
        return QuantExperts.from_tensors(gate_up, down, scheme, backend, act_stats, name)

    def __repr__(self) -> str:
        return f"<dsq MoE adapter {self.name}>"
