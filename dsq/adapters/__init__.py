"""MoE adapters: how dsq finds, names and replaces the routed experts of each architecture.

``get_adapter(model)`` returns the registered adapter meant for the model (by ``config.model_type`` or by
its expert classes), else the generic :class:`~dsq.adapters.base.MoEAdapter`, which handles any
transformers-style fused experts module and finds nothing in a plain ``nn.Linear`` model. See
:mod:`dsq.adapters.base` for the interface.
"""

from __future__ import annotations

from torch import nn

from dsq.adapters.base import (
    MoEAdapter,
    fuse_gate_up,
    fuse_packed_gate_up,
    split_gate_up,
    split_packed_gate_up,
)
from dsq.adapters.deepseek_v3 import DeepseekV3Adapter
from dsq.adapters.mixtral import MixtralAdapter
from dsq.adapters.qwen_moe import QwenMoeAdapter

__all__ = ["MoEAdapter", "DeepseekV3Adapter", "MixtralAdapter", "QwenMoeAdapter", "get_adapter",
           "register_adapter", "list_adapters", "split_gate_up", "fuse_gate_up", "split_packed_gate_up",
           "fuse_packed_gate_up"]

_GENERIC = MoEAdapter()
_ADAPTERS: list[MoEAdapter] = [DeepseekV3Adapter(), MixtralAdapter(), QwenMoeAdapter()]


def register_adapter(adapter: MoEAdapter) -> MoEAdapter:
    """Add an adapter; it is tried before the ones registered earlier."""
    if not isinstance(adapter, MoEAdapter):
        raise TypeError(f"register_adapter expects a MoEAdapter instance, got {type(adapter).__name__}")
    _ADAPTERS.insert(0, adapter)
    return adapter


def list_adapters() -> list[MoEAdapter]:
    """Registered adapters in the order get_adapter tries them (the generic one comes last)."""
    return [*_ADAPTERS, _GENERIC]


def get_adapter(model: nn.Module) -> MoEAdapter:
    """The adapter for ``model``: the first registered one that matches, else the generic fused adapter."""
    for adapter in _ADAPTERS:
        if adapter.matches(model):
            return adapter
    return _GENERIC
