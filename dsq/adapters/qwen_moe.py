"""Qwen2-MoE / Qwen3-MoE (transformers ``Qwen2MoeForCausalLM`` / ``Qwen3MoeForCausalLM``).

Fused experts at ``model.layers.i.mlp.experts`` (``gate_up_proj`` [E, 2I, H], ``down_proj`` [E, H, I]),
named ``mlp.experts.<e>.{gate,up,down}_proj`` on disk. Qwen2-MoE adds a shared expert
``mlp.shared_expert.{gate,up,down}_proj`` and its sigmoid gate ``mlp.shared_expert_gate`` (an
``nn.Linear`` with one output, quantized like any Linear unless a recipe ignores it).
"""

from __future__ import annotations

from dsq.adapters.base import MoEAdapter


class QwenMoeAdapter(MoEAdapter):
    name = "qwen_moe"
    model_types = ("qwen2_moe", "qwen3_moe")
    expert_classes = ("Qwen2MoeExperts", "Qwen3MoeExperts")
