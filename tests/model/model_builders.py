"""Small randomly initialised MoE models for the model-quantization tests (built from configs, no downloads).

Dimensions are tiny but every in_features is a multiple of 128, so group-128 and block-128 schemes fit.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

HIDDEN, VOCAB = 128, 256


def deepseek_config(**overrides):
    from transformers import DeepseekV3Config

    kw = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=256, moe_intermediate_size=128,
              num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1,
              n_routed_experts=8, kv_lora_rank=128, q_lora_rank=128, qk_rope_head_dim=32, v_head_dim=64,
              qk_nope_head_dim=32, n_group=2, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1,
              max_position_embeddings=64, num_mtp_layers=1)
    kw.update(overrides)
    return DeepseekV3Config(**kw)


def _add_mtp_layer(model) -> None:
    """Append a DeepSeek MTP layer as checkpoints carry it (model.layers.<num_hidden_layers>): a decoder layer
    plus eh_proj, enorm, hnorm and shared_head.{norm, head}. transformers' forward only runs the first
    num_hidden_layers layers, so the MTP layer is quantized but never executed -- as when serving without MTP."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm

    cfg = model.config
    layer = DeepseekV3DecoderLayer(cfg, layer_idx=cfg.num_hidden_layers)
    layer.eh_proj = nn.Linear(2 * HIDDEN, HIDDEN, bias=False)
    layer.enorm, layer.hnorm = DeepseekV3RMSNorm(HIDDEN), DeepseekV3RMSNorm(HIDDEN)
    layer.shared_head = nn.Module()
    layer.shared_head.norm = DeepseekV3RMSNorm(HIDDEN)
    layer.shared_head.head = nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "norm" in name.split(".")[-2]:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
        layer.mlp.gate.e_score_correction_bias.zero_()
    model.model.layers.append(layer)


def tiny_deepseek(seed: int = 0, mtp: bool = True, **overrides):
    """DeepseekV3ForCausalLM: 3 decoder layers (layer 0 dense MLP, layers 1-2 MoE with 8 routed experts,
    top-2 of 2 groups, 1 shared expert), MLA with q/kv LoRA ranks 128, plus one MTP layer when ``mtp``."""
    from transformers import DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(deepseek_config(**overrides)).eval()
    if mtp:
        _add_mtp_layer(model)
    return model


def tiny_mixtral(seed: int = 0):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=64, num_local_experts=4,
                        num_experts_per_tok=2, max_position_embeddings=64)
    return MixtralForCausalLM(cfg).eval()


def tiny_qwen2_moe(seed: int = 0):
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=256, moe_intermediate_size=128,
                         shared_expert_intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, num_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
    return Qwen2MoeForCausalLM(cfg).eval()


def token_batches(n: int = 2, batch: int = 2, seq: int = 16, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, seq), generator=g) for _ in range(n)]


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (Frobenius)."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def dequantized_copy(float_model, quant_model):
    """A float copy of ``float_model`` whose quantized weights are replaced by the backend's dequantized
    values (``backend.unpack``). For weight-only schemes it computes what the quantized model computes."""
    from dsq.nn import QuantExperts, QuantLinear

    sim = copy.deepcopy(float_model)
    with torch.no_grad():
        for name, mod in quant_model.named_modules():
            if isinstance(mod, QuantLinear):
                sim.get_submodule(name).weight.copy_(mod.backend.unpack(mod.packed, mod.scheme)[1])
            elif isinstance(mod, QuantExperts):
                target = sim.get_submodule(name)
                target.gate_up_proj.copy_(mod.backend.unpack(mod.weights.gate_up, mod.scheme)[1])
                target.down_proj.copy_(mod.backend.unpack(mod.weights.down, mod.scheme)[1])
    return sim
