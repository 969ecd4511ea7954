"""save -> load gives bit-identical logits and identical packed tensors, for both formats."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_builders import TOKENS, tiny_config

import dsq
from dsq.nn import QuantExperts, QuantLinear

CASES = [
    ("w8a16", "compressed-tensors"), ("w8a16", "ascend"),
    ("w4a16", "compressed-tensors"),
    ("w8a8-dynamic", "compressed-tensors"), ("w8a8-dynamic", "ascend"),
    ("deepseek-w4a8", "compressed-tensors"), ("deepseek-w4a8", "ascend"),
    ("deepseek-w4afp8", "compressed-tensors"),
]


def _modules(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantExperts))}


def _packs(m):
    return [m.packed] if isinstance(m, QuantLinear) else [m.weights.gate_up, m.weights.down]


@pytest.mark.parametrize("recipe,fmt", CASES)
def test_roundtrip_bit_identical(quantized, tmp_path, recipe, fmt):
    model = quantized(recipe)
    with torch.no_grad():
        before = model(TOKENS).logits
    if fmt == "compressed-tensors" and recipe == "deepseek-w4a8":
        with pytest.warns(UserWarning, match="12 W4A8_DYNAMIC modules are written as the W8A8_DYNAMIC"):
            out = dsq.save(model, tmp_path / "ckpt", format=fmt)
    else:
        out = dsq.save(model, tmp_path / "ckpt", format=fmt)
    loaded = dsq.load(out, backend="cpu")
    with torch.no_grad():
        after = loaded(TOKENS).logits
    assert torch.equal(before, after)

    orig, back = _modules(model), _modules(loaded)
    assert set(orig) == set(back)
    for name, m in orig.items():
        b = back[name]
        assert type(b) is type(m)
        if fmt == "compressed-tensors" and m.scheme.two_level:
            # written as the equal W8A8_DYNAMIC layer (compressed-tensors has no two-level form)
            assert b.scheme.name == "W8A8_DYNAMIC"
            continue
        assert b.scheme == m.scheme, name
        for p, q in zip(_packs(m), _packs(b)):
            assert set(p.tensors) == set(q.tensors), name
            for k in p.tensors:
                assert p[k].dtype == q[k].dtype and torch.equal(p[k], q[k]), f"{name}.{k}"
    # the float parts come back too (router bias, norms, embeddings, lm_head)
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    for k in sd0:
        if k.endswith(("e_score_correction_bias", "norm.weight", "embed_tokens.weight", "lm_head.weight")):
            assert torch.equal(sd0[k], sd1[k]), k
    assert loaded.dsq_info["checkpoint"]["format"] == fmt


def test_bf16_roundtrip_compressed_tensors(quantized, tmp_path):
    model = quantized("deepseek-w4afp8", torch.bfloat16)
    with torch.no_grad():
        before = model(TOKENS).logits
    loaded = dsq.load(dsq.save(model, tmp_path / "ckpt"), backend="cpu")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(before, loaded(TOKENS).logits)


def test_per_expert_names_and_sidecar(quantized, tmp_path):
    model = quantized("w4a16")
    out = dsq.save(model, tmp_path / "ckpt")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    for e in range(4):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert f"model.layers.1.mlp.experts.{e}.{proj}.weight_packed" in keys
    assert not any("gate_up_proj" in k for k in keys)
    side = json.loads((out / "dsq_quantization.json").read_text())
    assert side["experts"]["model.layers.1.mlp.experts"]["num_experts"] == 4
    assert side["linears"]["model.layers.0.self_attn.q_a_proj"]["name"] == "W4A16"
    assert side["recipe"]["name"] == "w4a16"


def test_load_without_sidecar_infers_schemes(quantized, tmp_path):
    """A checkpoint from another tool has no dsq_quantization.json: schemes come from the format metadata."""
    for recipe, fmt in (("w4a16", "compressed-tensors"), ("w8a8-dynamic", "ascend")):
        model = quantized(recipe)
        out = dsq.save(model, tmp_path / fmt, format=fmt)
        (out / "dsq_quantization.json").unlink()
        loaded = dsq.load(out)
        with torch.no_grad():
            assert torch.equal(model(TOKENS).logits, loaded(TOKENS).logits)


def test_inspect_summary(quantized, tmp_path):
    model = quantized("deepseek-w4a8")
    out = dsq.save(model, tmp_path / "ckpt", format="ascend")
    s = dsq.checkpoint.inspect(out)
    assert s["format"] == "ascend" and s["model_quant_type"] == "W8A8"
    # MLA projections W8A8 static (5 per layer), dense + shared MLP W8A8 dynamic, 12 per-expert modules
    assert s["schemes"]["W8A8"]["modules"] == 10
    assert s["schemes"]["W8A8_DYNAMIC"]["modules"] == 6
    assert s["schemes"]["W4A8_DYNAMIC"]["modules"] == 12
    total = sum(v["bytes"] for v in s["schemes"].values())
    assert total == s["tensor_bytes"]
    shard = next(f for f in s["files"] if f["name"] == "quant_model_weights.safetensors")
    assert 0 < s["tensor_bytes"] < shard["bytes"]


def test_tied_embeddings_roundtrip(tmp_path):
    """A model whose lm_head is tied to the input embedding: stored once, re-tied on load, same logits."""
    import transformers

    cfg = tiny_config()
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    dsq.quantize(model, "w8a16", backend="cpu", progress=False)
    out = dsq.save(model, tmp_path / "ckpt")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    loaded = dsq.load(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, loaded(TOKENS).logits)
