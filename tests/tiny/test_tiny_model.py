"""The shipped weights: architecture, sizes, and 128-aligned shapes for group-128 / 128x128-block schemes."""

import json

import torch
from safetensors import safe_open

from dsq.tiny.model import CONFIG_KWARGS, default_model_dir, load_model


def test_tiny_shipped_files_and_config():
    d = default_model_dir()
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == ["config.json", "model.safetensors"]
    assert (d / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV3ForCausalLM"]
    for k, v in CONFIG_KWARGS.items():
        if k in cfg:
            assert cfg[k] == v, k
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {v for k, v in dtypes.items() if "e_score_correction_bias" not in k} == {"BF16"}
    assert {v for k, v in dtypes.items() if "e_score_correction_bias" in k} == {"F32"}


def test_tiny_architecture_is_deepseek_and_128_aligned():
    m = load_model()
    n = sum(p.numel() for p in m.parameters())
    assert 3_000_000 <= n <= 20_000_000
    layers = m.model.layers
    assert type(layers[0].mlp).__name__ == "DeepseekV3MLP"
    for layer in layers[1:]:
        moe = layer.mlp
        assert type(moe).__name__ == "DeepseekV3MoE"
        assert moe.experts.num_experts == 16 and moe.gate.top_k == 2
        assert moe.gate.e_score_correction_bias.abs().sum() > 0  # balance bias was learned
        for p in (moe.experts.gate_up_proj, moe.experts.down_proj):
            assert p.shape[1] % 128 == 0 and p.shape[2] % 128 == 0
    att = layers[0].self_attn
    assert att.q_a_proj is not None and att.kv_a_proj_with_mqa.out_features == 128 + 128
    linears = [(name, mod) for name, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)]
    assert len(linears) == 1 + 4 * 5 + 3 + 3 * 3
    for name, mod in linears:
        assert mod.in_features % 128 == 0 and mod.out_features % 128 == 0, name
