"""Mixtral (transformers ``MixtralForCausalLM``): softmax top-k routing, no shared expert.

transformers keeps the experts fused at ``model.layers.i.mlp.experts`` (MixtralExperts: ``gate_up_proj``
[E, 2I, H], ``down_proj`` [E, H, I]). Mixtral checkpoints, and vLLM's Mixtral loader, name them
``model.layers.i.block_sparse_moe.experts.<e>.{w1, w3, w2}`` (w1 = gate, w3 = up, w2 = down); the router
is ``block_sparse_moe.gate`` on disk and ``mlp.gate`` in the module tree.
"""

from __future__ import annotations

from dsq.adapters.base import MoEAdapter


class MixtralAdapter(MoEAdapter):
    name = "mixtral"
    model_types = ("mixtral",)
    expert_classes = ("MixtralExperts",)
    proj_names = ("w1", "w3", "w2")

    def disk_prefix(self, fused_name: str) -> str:
        """``model.layers.0.mlp.experts`` -> ``model.layers.0.block_sparse_moe.experts``."""
        head, sep, tail = fused_name.rpartition(".mlp.")
        return f"{head}.block_sparse_moe.{tail}" if sep else fused_name
