"""DeepSeek-V3 / R1 (transformers ``DeepseekV3ForCausalLM``).

Layout (per decoder layer ``model.layers.i``): MLA attention ``self_attn.{q_a_proj, q_b_proj (or q_proj),
kv_a_proj_with_mqa, kv_b_proj, o_proj}``; layers ``i < first_k_dense_replace`` have a dense MLP
``mlp.{gate,up,down}_proj``; the others an MoE block with router ``mlp.gate`` (DeepseekV3TopkRouter,
sigmoid group-limited top-k, stays float), shared experts ``mlp.shared_experts.{gate,up,down}_proj`` and
fused routed experts ``mlp.experts`` (DeepseekV3Experts: ``gate_up_proj`` [E, 2I, H], ``down_proj``
[E, H, I]). On disk and in vLLM/SGLang the routed experts are ``mlp.experts.<e>.{gate,up,down}_proj``.
Multi-token-prediction layers follow the decoder layers (``model.layers.61`` in DeepSeek-V3); transformers
does not build them, but a model that carries them is handled by name like any other layer.
"""

from __future__ import annotations

from torch import nn

from dsq.adapters.base import MoEAdapter


class DeepseekV3Adapter(MoEAdapter):
    name = "deepseek_v3"
    model_types = ("deepseek_v3",)
    expert_classes = ("DeepseekV3Experts",)

    @staticmethod
    def mtp_layer_indices(model: nn.Module) -> list[int]:
        """Indices of the MTP layers: ``num_hidden_layers .. num_hidden_layers + num_mtp_layers - 1``."""
        cfg = model.config
        n = int(getattr(cfg, "num_mtp_layers", None) or getattr(cfg, "num_nextn_predict_layers", 0) or 0)
        return list(range(cfg.num_hidden_layers, cfg.num_hidden_layers + n))

    @staticmethod
    def dense_layer_indices(model: nn.Module) -> list[int]:
        """Decoder layers with a dense MLP instead of an MoE block (``first_k_dense_replace``)."""
        return list(range(min(int(model.config.first_k_dense_replace), int(model.config.num_hidden_layers))))
