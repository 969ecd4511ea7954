"""Shared helpers for the streaming tests: tiny checkpoints and tensor-by-tensor comparison."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open


def read_all(directory) -> dict[str, torch.Tensor]:
    """Every tensor of every *.safetensors file in ``directory``."""
    out = {}
    for p in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))[:10]
    for k in a:
        x, y = a[k], b[k]
        assert x.dtype == y.dtype and tuple(x.shape) == tuple(y.shape), (k, x.dtype, y.dtype, x.shape, y.shape)
        assert torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)), k


def tiny_deepseek_model(seed: int = 0):
    """A tiny random DeepseekV3ForCausalLM (bf16): layer 0 dense, layers 1-2 MoE with 4 experts (I = 128)."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    cfg = DeepseekV3Config(vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=128,
                           num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1,
                           n_routed_experts=4, kv_lora_rank=128, q_lora_rank=128, qk_rope_head_dim=32,
                           v_head_dim=64, qk_nope_head_dim=32, n_group=2, topk_group=1, num_experts_per_tok=2,
                           first_k_dense_replace=1, max_position_embeddings=64)
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(cfg).eval().to(torch.bfloat16)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "e_score_correction_bias" not in n:
                p.normal_(0.0, 0.05)
    return model
