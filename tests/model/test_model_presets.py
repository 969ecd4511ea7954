"""Every preset quantizes the tiny DeepSeek-V3 on the cpu backend; logits stay close; plan == what was done."""

from __future__ import annotations

import json

import pytest
import torch
from model_builders import dequantized_copy, logits, rel_err

import dsq
from dsq.nn import QuantExperts, QuantLinear

# Bounds for the random tiny model (std-0.02 weights: no outliers, the hardest case for int4), with logits
# compared per token (relative L2 error of each position's logits vector). MoE routing is discontinuous:
# a small weight error can flip a token's top-k experts, which moves that token a lot, so the median token
# error measures the numerics and the worst-token / overall errors are bounded loosely. Measured on this
# model (torch 2.13 CPU), median / overall / top-1 agreement:
#   w8a16 0.016 / 0.049 / 0.94       w4a16 0.28 / 0.30 / 0.69       w8a8-dynamic 0.019 / 0.068 / 0.91
#   deepseek-w4a8 0.054 / 0.091 / 0.91                               deepseek-w4afp8 0.092 / 0.12 / 0.91
# A wiring error (gate/up swapped, wrong expert, missing bias) gives errors near 1 or more.
BOUNDS = {  # preset: (median token error, overall error, top-1 agreement at least)
    "w8a16": (0.03, 0.1, 0.85),
    "w4a16": (0.4, 0.45, 0.5),
    "w8a8-dynamic": (0.035, 0.12, 0.8),
    "deepseek-w4a8": (0.09, 0.16, 0.8),
    "deepseek-w4afp8": (0.15, 0.22, 0.75),
}


def test_bounds_cover_every_preset():
    assert set(BOUNDS) == set(dsq.list_recipes())


@pytest.mark.parametrize("preset", sorted(BOUNDS))
def test_preset_quantizes_close_and_matches_plan(preset, deepseek, float_deepseek, float_logits, eval_ids, calib):
    plan = dsq.plan(deepseek, preset, backend="cpu", warn=False)
    assert not plan.problems
    dsq.quantize(deepseek, preset, backend="cpu", calib_data=calib, progress=False)
    out = logits(deepseek, eval_ids)
    assert torch.isfinite(out).all()
    per_token = (out - float_logits).norm(dim=-1) / float_logits.norm(dim=-1)
    med, err = float(per_token.median()), rel_err(out, float_logits)
    agree = float((out.argmax(-1) == float_logits.argmax(-1)).float().mean())
    max_med, max_err, min_agree = BOUNDS[preset]
    assert med < max_med and err < max_err and agree >= min_agree, \
        f"{preset}: median token error {med:.4f}, overall {err:.4f}, top-1 agreement {agree:.3f}"

    # the plan is exactly what happened: module types, schemes, packed bytes, and dsq_info
    done = {}
    for e in plan.entries:
        mod = deepseek.get_submodule(e.name)
        if e.scheme is None:
            assert not isinstance(mod, (QuantLinear, QuantExperts)), e.name
            continue
        cls = QuantLinear if e.kind == "linear" else QuantExperts
        assert isinstance(mod, cls), f"{e.name} is {type(mod).__name__}, plan said {e.kind}"
        assert isinstance(mod, dsq.QuantLinear if e.kind == "linear" else dsq.QuantMoE)  # the public names
        assert mod.scheme == e.scheme
        packed = [mod.packed] if e.kind == "linear" else [mod.weights.gate_up, mod.weights.down]
        assert sum(p.nbytes for p in packed) == e.bytes_after, e.name
        done[e.name] = e.scheme.to_dict()
    info = deepseek.dsq_info
    assert info["modules"] == done and info["backend"] == "cpu-reference"
    assert info["recipe"] == plan.recipe.to_dict()
    json.dumps(info)  # plain JSON data
    # router gates, norms and embeddings are untouched float modules
    assert type(deepseek.model.layers[1].mlp.gate).__name__ == "DeepseekV3TopkRouter"
    assert isinstance(deepseek.lm_head, torch.nn.Linear)


@pytest.mark.parametrize("preset", ["w8a16", "w4a16"])
def test_weight_only_equals_dequantized_float_model(preset, deepseek, float_deepseek, eval_ids):
    """Weight-only schemes: the quantized model computes the float model with dequantized weights (only
    float accumulation order differs), which pins the wiring: gate/up order, experts, routing, biases."""
    dsq.quantize(deepseek, preset, progress=False)
    sim = dequantized_copy(float_deepseek, deepseek)
    got, want = logits(deepseek, eval_ids), logits(sim, eval_ids)
    assert rel_err(got, want) < 1e-5


def test_deepseek_w4a8_assignments(deepseek, calib):
    dsq.quantize(deepseek, "deepseek-w4a8", calib_data=calib, progress=False)
    layers = deepseek.model.layers
    mla = layers[1].self_attn
    for proj in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"):
        m = getattr(mla, proj)
        assert m.scheme.name == "W8A8" and m.scheme.static_activations
        assert m.scheme.scale_rule.value == "qmax" and m.scheme.act_rounding.value == "half_away"
        s, z = m.packed["input_scale"], m.packed["input_zero_point"]
        assert s.shape == (1,) and float(s) > 0 and z.dtype == torch.int8
    assert layers[1].mlp.shared_experts.down_proj.scheme.name == "W8A8_DYNAMIC"
    assert layers[0].mlp.gate_proj.scheme.name == "W8A8_DYNAMIC"  # dense first-k MLP
    assert layers[2].mlp.experts.scheme.name == "W4A8_DYNAMIC"
    mtp = layers[3]  # MTP layer: everything W8A8 dynamic (routed experts and attention too), head float
    assert mtp.mlp.experts.scheme.name == "W8A8_DYNAMIC"
    assert mtp.self_attn.q_a_proj.scheme.name == "W8A8_DYNAMIC"
    assert mtp.eh_proj.scheme.name == "W8A8_DYNAMIC"
    assert isinstance(mtp.shared_head.head, torch.nn.Linear)
    assert isinstance(deepseek.lm_head, torch.nn.Linear)


def test_deepseek_w4afp8_assignments(deepseek):
    dsq.quantize(deepseek, "deepseek-w4afp8", progress=False)
    layers = deepseek.model.layers
    assert layers[1].mlp.experts.scheme.name == "W4AFP8"
    assert layers[3].mlp.experts.scheme.name == "W4AFP8"
    for m in (layers[0].mlp.down_proj, layers[1].self_attn.kv_b_proj, layers[2].mlp.shared_experts.up_proj,
              layers[3].eh_proj):
        assert m.scheme.name == "FP8_BLOCK"
        assert m.packed["weight"].dtype == torch.float8_e4m3fn
    assert isinstance(layers[3].shared_head.head, torch.nn.Linear)


def test_scheme_name_as_recipe(deepseek):
    dsq.quantize(deepseek, "W8A8_DYNAMIC", progress=False)
    assert deepseek.model.layers[1].mlp.experts.scheme.name == "W8A8_DYNAMIC"
    assert isinstance(deepseek.lm_head, torch.nn.Linear)  # lm_head ignored by default


def test_plan_counts_and_totals(float_deepseek):
    p = dsq.plan(float_deepseek, "deepseek-w4a8")
    c = p.counts()
    # 4 layers x 5 MLA projections (+ MTP) -> W8A8 static except the MTP layer's
    assert c["W8A8"]["linear"] == 3 * 5
    assert c["W4A8_DYNAMIC"] == {**c["W4A8_DYNAMIC"], "linear": 0, "expert_blocks": 2, "experts": 16}
    # MTP: 5 MLA + 3 shared expert + eh_proj linears and its experts block; dense layer 0: 3; shared: 2 x 3
    assert c["W8A8_DYNAMIC"]["linear"] == 5 + 3 + 1 + 3 + 6 and c["W8A8_DYNAMIC"]["expert_blocks"] == 1
    assert c["float"]["linear"] == 2  # lm_head and the MTP head
    t = p.totals()
    all_params = sum(x.numel() * x.element_size() for x in float_deepseek.parameters())
    assert t["bytes_before"] == all_params
    assert t["bytes_after"] < 0.3 * t["bytes_before"]
    text = p.format()
    assert "model.layers.2.mlp.experts" in text and "W4A8_DYNAMIC" in text
    json.loads(p.to_json())
