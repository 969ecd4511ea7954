"""Calibration: hooks record activation ranges without changing the model's outputs; experts see every token."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_builders import logits, token_batches

import dsq
from dsq.adapters import get_adapter
from dsq.calibration import collect_act_stats
from dsq.errors import QuantInputError
from dsq.recipes import Recipe, Rule

W8A8 = dsq.get_scheme("W8A8")
# static W8A8 on attention and on the routed experts, so both kinds of hooks run
# (layers 0-2 only: the MTP layer, model.layers.3, never runs in transformers' forward)
STATIC_RECIPE = Recipe((Rule(("re:model\\.layers\\.[0-2]\\.self_attn\\.",), W8A8),
                        Rule(("re:model\\.layers\\.[0-2]\\.mlp\\.experts$",), W8A8)), name="static-test")


def _expert_blocks(model):
    return {n: m for n, m in get_adapter(model).find_experts(model).items() if n.startswith("model.layers.1.")
            or n.startswith("model.layers.2.")}


@pytest.mark.parametrize("mode", ["all", "routed"])
def test_calibration_leaves_outputs_exactly_unchanged(float_deepseek, calib, mode):
    model = float_deepseek
    want = [logits(model, ids) for ids in calib]
    got = []
    handle = model.register_forward_hook(lambda mod, args, out: got.append(out.logits.detach().clone()))
    try:
        linears = {"model.layers.1.self_attn.o_proj": model.get_submodule("model.layers.1.self_attn.o_proj")}
        collect_act_stats(model, linears, _expert_blocks(model), calib, get_adapter(model), mode, progress=False)
    finally:
        handle.remove()
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)  # bit-identical: only routed outputs are summed into the layer output


def test_every_expert_sees_every_token(float_deepseek, calib):
    model = float_deepseek
    adapter = get_adapter(model)
    blocks = _expert_blocks(model)
    name = "model.layers.2.mlp.experts"
    # the block's input and routing, recorded independently of dsq
    seen = []
    h = blocks[name].register_forward_pre_hook(lambda m, args: seen.append((args[0].detach().clone(),
                                                                            args[1].detach().clone())))
    try:
        stats, report = collect_act_stats(model, {}, blocks, calib, adapter, "all", progress=False)
    finally:
        h.remove()
    x = torch.cat([s[0] for s in seen])
    ids = torch.cat([s[1] for s in seen])
    t, k = ids.shape
    rep = report["experts"][name]
    assert rep["tokens"] == t == 2 * 2 * 16
    assert rep["stat_tokens"] == [t] * 8
    assert rep["routed_tokens"] == torch.bincount(ids.flatten(), minlength=8).tolist()
    assert sum(rep["routed_tokens"]) == t * k and rep["fallback_experts"] == [] and report["fallbacks"] == []
    gate_up = blocks[name].gate_up_proj.detach()
    for e in (0, 5):
        gu, dn = stats[name]["gate_up"][e], stats[name]["down"][e]
        assert (gu.min_val, gu.max_val) == (float(x.min()), float(x.max()))
        g, u = F.linear(x, gate_up[e]).chunk(2, dim=-1)
        a = F.silu(g) * u
        assert (dn.min_val, dn.max_val) == (float(a.min()), float(a.max()))
        assert dn.num_tokens == t


def test_unrouted_expert_gets_documented_fallback(deepseek, calib):
    """routed mode: expert 3 of layer 1 never wins routing (huge negative selection bias), so it has no
    statistics; it gets the union range of its layer's other experts, is reported, and its scale is sane."""
    with torch.no_grad():
        deepseek.model.layers[1].mlp.gate.e_score_correction_bias[3] = -1e4
    plan = dsq.plan(deepseek, STATIC_RECIPE)
    dsq.quantize(deepseek, STATIC_RECIPE, calib_data=calib, expert_mode="routed", progress=False)
    for e in plan.quantized:  # static experts carry input scales and zero points [E, 1]: bytes still as planned
        mod = deepseek.get_submodule(e.name)
        packed = [mod.packed] if e.kind == "linear" else [mod.weights.gate_up, mod.weights.down]
        assert sum(p.nbytes for p in packed) == e.bytes_after, e.name
    rep = deepseek.dsq_info["calibration"]
    block = rep["experts"]["model.layers.1.mlp.experts"]
    assert block["routed_tokens"][3] == 0 and block["fallback_experts"] == [3]
    assert any("model.layers.1.mlp.experts expert 3" in f for f in rep["fallbacks"])
    for packed in (deepseek.model.layers[1].mlp.experts.weights.gate_up, deepseek.model.layers[1].mlp.experts.weights.down):
        s = packed["input_scale"]
        assert s.shape == (8, 1) and torch.isfinite(s).all() and (s > 0).all()
        others = torch.cat([s[:3], s[4:]])
        # union range of the others: expert 3's scale is at least the widest of theirs (zero point may differ)
        assert float(s[3]) >= float(others.max()) - 1e-12
    out = logits(deepseek, calib[0])
    assert torch.isfinite(out).all()


def test_static_scale_matches_recorded_range(deepseek, calib):
    name = "model.layers.1.self_attn.kv_b_proj"
    xs = []
    h = deepseek.get_submodule(name).register_forward_pre_hook(lambda m, a: xs.append(a[0].detach().clone()))
    try:
        for ids in calib:
            logits(deepseek, ids)
    finally:
        h.remove()
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs])
    dsq.quantize(deepseek, STATIC_RECIPE, calib_data=calib, progress=False)
    packed = deepseek.get_submodule(name).packed
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = float(packed["input_scale"])
    assert math.isclose(scale, (hi - lo) / 255, rel_tol=1e-6)
    assert int(packed["input_zero_point"]) == max(-128, min(127, round(-128 - lo / scale)))
    rep = deepseek.dsq_info["calibration"]["modules"][name]
    assert rep["tokens"] == x.shape[0] and rep["min"] == float(x.min()) and rep["max"] == float(x.max())


def test_static_scheme_without_calib_data_is_an_error(deepseek):
    with pytest.raises(QuantInputError, match="need calib_data.*self_attn"):
        dsq.quantize(deepseek, "deepseek-w4a8", progress=False)


def test_module_that_never_ran_is_an_error(deepseek, calib):
    """The MTP layer is not executed by transformers' forward: a static scheme there has no data."""
    recipe = Recipe((Rule(("re:model\\.layers\\.3\\.eh_proj$",), W8A8),), name="mtp-static")
    with pytest.raises(QuantInputError, match="never ran during calibration.*model.layers.3.eh_proj"):
        dsq.quantize(deepseek, recipe, calib_data=calib, progress=False)


def test_calibration_accepts_dict_and_single_tensor_batches(deepseek):
    ids = token_batches(n=1)[0]
    batches = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    dsq.quantize(deepseek, STATIC_RECIPE, calib_data=batches, progress=False)
    assert deepseek.dsq_info["calibration"]["batches"] == 1
