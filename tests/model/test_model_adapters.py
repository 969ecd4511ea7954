"""MoE adapters: Mixtral (experts renamed on disk) and Qwen2-MoE quantize through the same interface;
fused <-> per-expert names and packed gate_up split/fuse are exact inverses."""

from __future__ import annotations

import copy

import pytest
import torch
from model_builders import dequantized_copy, logits, rel_err, tiny_mixtral, tiny_qwen2_moe, token_batches

import dsq
from dsq.adapters import (
    DeepseekV3Adapter,
    MixtralAdapter,
    MoEAdapter,
    QwenMoeAdapter,
    fuse_packed_gate_up,
    get_adapter,
    split_packed_gate_up,
)
from dsq.nn import QuantExperts
from dsq.recipes import Recipe, Rule


def test_get_adapter_by_architecture(float_deepseek):
    assert isinstance(get_adapter(float_deepseek), DeepseekV3Adapter)
    assert isinstance(get_adapter(tiny_mixtral()), MixtralAdapter)
    assert isinstance(get_adapter(tiny_qwen2_moe()), QwenMoeAdapter)
    generic = get_adapter(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    assert type(generic) is MoEAdapter and generic.find_experts(torch.nn.Linear(4, 4)) == {}
    assert DeepseekV3Adapter.mtp_layer_indices(float_deepseek) == [3]
    assert DeepseekV3Adapter.dense_layer_indices(float_deepseek) == [0]


def test_expert_names_round_trip():
    mix, ds = MixtralAdapter(), DeepseekV3Adapter()
    names = mix.expert_names("model.layers.1.mlp.experts", 4)
    assert names[3] == {"gate": "model.layers.1.block_sparse_moe.experts.3.w1",
                        "up": "model.layers.1.block_sparse_moe.experts.3.w3",
                        "down": "model.layers.1.block_sparse_moe.experts.3.w2"}
    fused = ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert mix.parse_expert_name("model.layers.1.block_sparse_moe.experts.3.w2.weight_scale", fused) == \
        ("model.layers.1.mlp.experts", 3, "down")
    assert ds.expert_names("model.layers.5.mlp.experts", 256)[255]["up"] == "model.layers.5.mlp.experts.255.up_proj"
    assert ds.parse_expert_name("model.layers.1.mlp.experts.17.gate_proj.weight", fused) == \
        ("model.layers.1.mlp.experts", 17, "gate")
    assert ds.parse_expert_name("model.layers.1.mlp.shared_experts.gate_proj.weight", fused) is None
    assert mix.parse_expert_name("model.layers.1.mlp.experts.3.w1.weight", fused) is None  # not a disk name


def test_mixtral_quantizes_and_equals_dequantized_model():
    model = tiny_mixtral()
    ids = token_batches(n=1)[0]
    ref = logits(model, ids)
    float_model = copy.deepcopy(model)
    p = dsq.plan(model, "w4a16")
    # per-expert disk names (w1/w3/w2) select the block too
    by_disk_name = Recipe((Rule(("re:.*block_sparse_moe\\.experts\\.\\d+\\.w[123]$",), "W8A16"),), name="t")
    assert dsq.plan(model, by_disk_name).scheme_of("model.layers.0.mlp.experts").name == "W8A16"
    dsq.quantize(model, "w4a16", progress=False)
    assert p.adapter == "mixtral" and model.dsq_info["adapter"] == "mixtral"
    experts = model.model.layers[1].mlp.experts
    assert isinstance(experts, QuantExperts) and experts.num_experts == 4
    assert experts.weights.gate_up.shape == (4, 256, 128) and experts.weights.down.shape == (4, 128, 128)
    out = logits(model, ids)
    assert rel_err(out, logits(dequantized_copy(float_model, model), ids)) < 1e-5
    assert rel_err(out, ref) < 0.5


def test_qwen2_moe_quantizes_with_shared_expert_and_its_gate():
    model = tiny_qwen2_moe()
    ids = token_batches(n=1)[0]
    ref = logits(model, ids)
    dsq.quantize(model, "w8a8-dynamic", progress=False)
    mlp = model.model.layers[0].mlp
    assert isinstance(mlp.experts, QuantExperts)
    assert mlp.shared_expert.down_proj.scheme.name == "W8A8_DYNAMIC"
    assert mlp.shared_expert_gate.out_features == 1  # a [1, 128] Linear quantizes like any other
    out = logits(model, ids)
    per_token = (out - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(per_token.median()) < 0.05


@pytest.mark.parametrize("scheme", ["W4A16", "W4A16_ASYM", "W8A16", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK", "W8A8"])
def test_packed_gate_up_split_equals_packing_halves(scheme):
    """Splitting a packed [E, 2I, H] gate_up gives exactly what packing gate and up separately gives."""
    be = dsq.get_backend("cpu")
    s = dsq.get_scheme(scheme)
    g = torch.Generator().manual_seed(3)
    e, i, h = 2, 128, 256
    gate, up = torch.randn(e, i, h, generator=g) * 0.02, torch.randn(e, i, h, generator=g) * 0.05
    stats = [dsq.ActStats(-1.0 - j, 2.0 + j, 10) for j in range(e)] if s.static_activations else None
    fused = be.quantize_weight(torch.cat([gate, up], dim=1), s, stats)
    pg, pu = split_packed_gate_up(fused, s)
    for half, w in ((pg, gate), (pu, up)):
        want = be.quantize_weight(w, s, stats)
        assert half.shape == want.shape and set(half.tensors) == set(want.tensors)
        for k in want.tensors:
            assert torch.equal(half[k], want[k]), k
    again = fuse_packed_gate_up(pg, pu, s)
    assert again.shape == fused.shape and all(torch.equal(again[k], fused[k]) for k in fused.tensors)


def test_split_refuses_a_cut_inside_a_scale_block():
    be, s = dsq.get_backend("cpu"), dsq.get_scheme("FP8_BLOCK")
    fused = be.quantize_weight(torch.randn(1, 128, 128) * 0.02, s)  # I = 64: the cut is inside a 128-row block
    with pytest.raises(dsq.QuantInputError, match="I=64 is not a multiple of the 128-row scale block"):
        split_packed_gate_up(fused, s)
