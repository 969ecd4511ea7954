"""Builders for the checkpoint tests: a small randomly initialised DeepseekV3ForCausalLM and its inputs.

A module of its own (not conftest.py) so that test files import it by a unique name: ``from conftest import``
resolves to whichever conftest pytest imported first when tests/model and tests/checkpoint files are
collected together."""

from __future__ import annotations

import pytest
import torch

import dsq

transformers = pytest.importorskip("transformers")

CALIB = [torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))]
TOKENS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(2))


def tiny_config():
    """2 layers (one dense, one MoE with 4 routed + 1 shared expert); every Linear dim a multiple of 128 so
    group-128 and 128x128-block schemes fit."""
    return transformers.DeepseekV3Config(
        vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=128, num_hidden_layers=2,
        first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
        num_attention_heads=2, num_key_value_heads=2, q_lora_rank=128, kv_lora_rank=128, qk_rope_head_dim=64,
        qk_nope_head_dim=64, v_head_dim=128, n_group=1, topk_group=1, max_position_embeddings=64)


def tiny_model(dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    # built in its dtype as from_pretrained does (rotary inv_freq stays float32; .to(bf16) would round it)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(), dtype=dtype).eval()
    with torch.no_grad():  # a random router bias, so that a checkpoint that drops it would show
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.copy_(torch.randn_like(m.e_score_correction_bias) * 0.1)
    return model


def with_scale_dtype(recipe_name: str, scale_dtype: str) -> dsq.Recipe:
    data = dsq.get_recipe(recipe_name).to_dict()
    data["rules"] = [{**r, "scheme": {**r["scheme"], "scale_dtype": scale_dtype}} for r in data["rules"]]
    return dsq.Recipe.from_dict(data)
